package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"perigee/edge/upstream"
)

// canned answers every request with the same response, allocating
// nothing, so that what an attempt costs is the balancer's alone.
type canned struct {
	resp *http.Response
	body strings.Reader
}

func (c *canned) RoundTrip(req *http.Request) (*http.Response, error) {
	c.body.Reset("ok")
	c.resp.Request = req
	return c.resp, nil
}

// TestAttemptEndsWithItsBody: an attempt holds its backend's in-flight
// slot until the response body is closed, and costs one allocation (the
// body's wrapper, which ends it).
func TestAttemptEndsWithItsBody(t *testing.T) {
	svc := newService(t, upstream.Config{Backends: []upstream.BackendConfig{{URL: "http://127.0.0.1:1"}}})
	base := &canned{resp: &http.Response{StatusCode: 200, Header: http.Header{}}}
	base.resp.Body = io.NopCloser(&base.body)
	rt := &balancing{svc: svc, base: base}
	req, _ := http.NewRequest(http.MethodGet, "http://front/x", nil)
	inFlight := func() int64 { return svc.Backends()[0].Status(time.Now()).InFlight }

	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if n := inFlight(); n != 1 {
		t.Fatalf("in flight with the body open: %d, want 1", n)
	}
	resp.Body.Close()
	resp.Body.Close() // a second Close ends nothing twice
	if n := inFlight(); n != 0 {
		t.Fatalf("in flight after the body closed: %d, want 0", n)
	}

	allocs := testing.AllocsPerRun(100, func() {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	})
	if allocs > 1 {
		t.Fatalf("an attempt allocates %v times, want 1", allocs)
	}
}
