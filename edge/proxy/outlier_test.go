package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"perigee/edge/upstream"
)

// A backend whose every answer is a good head and then a cut body is an
// outlier: its cuts count as failures, and it is ejected as one that
// answers 5xx is. Its heads alone were counted, each a success that wiped
// its failures in a row, so it kept its share of the traffic for good.
func TestBackendThatCutsItsBodiesIsEjected(t *testing.T) {
	var cut atomic.Int32
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cut.Add(1)
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, strings.Repeat("x", 10))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	t.Cleanup(bad.Close)
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(good.Close)
	var tm Timeouts
	tm.SetDefaults()
	p := New(tm, "test-node", quiet)
	t.Cleanup(p.Close)
	const inARow = 2
	svc := newService(t, upstream.Config{Balancer: upstream.RoundRobin, Outlier: upstream.Outlier{ConsecutiveFailures: inARow},
		Backends: []upstream.BackendConfig{{URL: bad.URL}, {URL: good.URL}}})
	h := p.Handler(svc, tm.Stream)
	for range 20 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	}
	if n := cut.Load(); n > inARow {
		t.Fatalf("the backend that cuts every body served %d of 20 requests; want it ejected after %d", n, inARow)
	}
}
