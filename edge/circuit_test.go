package edge

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A slow backend behind max_requests 2: of 10 concurrent requests, 2 reach
// it and 8 are refused with a JSON 503 and Retry-After while the 2 are still
// held; once they finish, the breaker lets requests through again.
func TestCircuitBreakerRefusesPastMaxRequests(t *testing.T) {
	held := newHeldBackend(t)
	slow := held.url
	yaml := strings.Replace(nodeYAML("round_robin", slow), "    backends:", "    circuit: {max_requests: 2}\n    backends:", 1)
	n := startNode(t, yaml)
	base := "https://" + n.Addrs().HTTPS
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			gate := held.hold()
			var wg sync.WaitGroup
			statuses := make(chan int, 10)
			slowGet := func() {
				defer wg.Done()
				resp, _ := get(t, pc.client, base+"/slow")
				statuses <- resp.StatusCode
			}
			wg.Add(2)
			go slowGet()
			go slowGet()
			waitFor(t, "two requests at the backend", func() bool { return held.arrived.Load() == 2 })
			var slowest time.Duration
			for range 8 {
				start := time.Now()
				resp, body := get(t, pc.client, base+"/slow")
				slowest = max(slowest, time.Since(start))
				var e struct {
					Status int    `json:"status"`
					Error  string `json:"error"`
				}
				if resp.StatusCode != 503 || json.Unmarshal([]byte(body), &e) != nil || e.Status != 503 || resp.Header.Get("Retry-After") == "" {
					t.Fatalf("past max_requests: %d %q Retry-After %q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
				}
				if resp.ProtoMajor != pc.proto {
					t.Fatalf("spoke HTTP/%d", resp.ProtoMajor)
				}
			}
			t.Logf("slowest refusal took %v", slowest)
			if got := held.arrived.Load(); got != 2 {
				t.Fatalf("%d requests reached the backend past max_requests 2", got)
			}
			close(gate)
			wg.Wait()
			close(statuses)
			for s := range statuses {
				if s != 200 {
					t.Fatalf("an admitted request got %d", s)
				}
			}
			waitFor(t, "the breaker closes", func() bool {
				resp, _ := get(t, pc.client, base+"/fast")
				return resp.StatusCode == 200
			})
		})
	}
	st := n.state.Load().services["api"].CircuitStatus()
	if st.Overflow["max_requests"] != 24 || st.Open {
		t.Fatalf("circuit status %+v: want 24 overflows and closed", st)
	}
	_, metrics := get(t, h1Client(), "http://"+n.Addrs().Admin+"/metrics")
	if !strings.Contains(metrics, `perigee_node_upstream_overflow_total{reason="max_requests",service="api"} 24`) {
		t.Fatal("overflow counter missing from /metrics")
	}
}

// heldBackend holds each request for /slow until its round is released,
// counting those it holds; other paths it answers at once.
type heldBackend struct {
	url     string
	arrived atomic.Int32
	release atomic.Pointer[chan struct{}]
}

func newHeldBackend(t *testing.T) *heldBackend {
	h := &heldBackend{}
	h.hold()
	h.url = serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			h.arrived.Add(1)
			<-*h.release.Load()
		}
		fmt.Fprint(w, "ok")
	}))
	return h
}

// hold starts a round: nobody has arrived, and /slow waits until the
// returned channel is closed.
func (h *heldBackend) hold() chan struct{} {
	h.arrived.Store(0)
	gate := make(chan struct{})
	h.release.Store(&gate)
	return gate
}
