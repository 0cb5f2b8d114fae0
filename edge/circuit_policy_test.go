package edge

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"perigee/telemetry"
)

// circuitView is the part of a breaker /services shows that these tests read.
type circuitView struct {
	MaxRequests           int               `json:"max_requests"`
	MaxRetries            int               `json:"max_retries"`
	MaxRequestsPerBackend int               `json:"max_requests_per_backend"`
	Overflow              map[string]uint64 `json:"overflow"`
}

// circuitOf reads one service's breaker from GET /services.
func circuitOf(t *testing.T, n *testNode, service string) circuitView {
	t.Helper()
	_, body := get(t, h1Client(), "http://"+n.Addrs().Admin+"/services")
	var out []struct {
		Name    string      `json:"name"`
		Circuit circuitView `json:"circuit"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("/services: %v %s", err, body)
	}
	for _, s := range out {
		if s.Name == service {
			return s.Circuit
		}
	}
	t.Fatalf("/services has no %s: %s", service, body)
	return circuitView{}
}

func decisionsOf(t *testing.T, n *testNode, action string) []telemetry.Decision {
	t.Helper()
	_, body := get(t, h1Client(), "http://"+n.Addrs().Admin+"/decisions?n=100")
	var all, out []telemetry.Decision
	if err := json.Unmarshal([]byte(body), &all); err != nil {
		t.Fatalf("/decisions: %v %s", err, body)
	}
	for _, d := range all {
		if d.Action == action {
			out = append(out, d)
		}
	}
	return out
}

// A policy raises a slow backend's breaker from the config's max_requests 2
// to 5: five concurrent requests reach the backend and the sixth is refused
// at once, over each protocol. The decision is logged and /services shows
// the thresholds in force. A reload keeps what the policy set, as it keeps
// a route's limit, while the thresholds the policy did not name follow the
// new config.
func TestCircuitPolicyRaisesMaxRequestsLive(t *testing.T) {
	held := newHeldBackend(t)
	slow := held.url
	script := filepath.Join(t.TempDir(), "room.lua")
	writeFile(t, script, `function evaluate(m) circuit("api", {max_requests = 5}, "more room") end`+"\n")
	conf := func(circuit string) string {
		return strings.Replace(nodeYAML("round_robin", slow), "    backends:", "    circuit: "+circuit+"\n    backends:", 1) +
			fmt.Sprintf("policies:\n  room: {script: %q, interval: 50ms}\n", script)
	}
	n := startNode(t, conf("{max_requests: 2}"))
	waitFor(t, "the policy's max_requests in /services", func() bool { return circuitOf(t, n, "api").MaxRequests == 5 })
	ds := decisionsOf(t, n, "circuit")
	if len(ds) != 1 || !ds[0].Applied || ds[0].Service != "api" || ds[0].Target != "max_requests=5" || ds[0].Reason != "more room" {
		t.Fatalf("circuit decisions: %+v", ds)
	}
	base := "https://" + n.Addrs().HTTPS
	// A sampler of its own, so that the node's do not take the window.
	sampler := n.metrics.NewSampler("n", "r", n.services)
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			gate := held.hold()
			var wg sync.WaitGroup
			statuses := make(chan int, 5)
			for range 5 {
				wg.Go(func() {
					resp, _ := get(t, pc.client, base+"/slow")
					statuses <- resp.StatusCode
				})
			}
			waitFor(t, "five requests at the backend", func() bool { return held.arrived.Load() == 5 })
			resp, body := get(t, pc.client, base+"/slow")
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || resp.ProtoMajor != pc.proto {
				t.Fatalf("the sixth request: HTTP/%d %d %q Retry-After %q", resp.ProtoMajor, resp.StatusCode, body, resp.Header.Get("Retry-After"))
			}
			if got := held.arrived.Load(); got != 5 {
				t.Fatalf("%d requests reached the backend past max_requests 5", got)
			}
			close(gate)
			wg.Wait()
			close(statuses)
			for s := range statuses {
				if s != 200 {
					t.Fatalf("an admitted request got %d", s)
				}
			}
		})
	}
	if st := circuitOf(t, n, "api"); st.Overflow["max_requests"] != 3 {
		t.Fatalf("overflows %v, want 3 of max_requests", st.Overflow)
	}
	// The telemetry sample, which the shipper sends, counts them in its window.
	if of := sampler.Sample(time.Now()).Services["api"].Overflow; len(of) != 1 || of["max_requests"] != 3 {
		t.Fatalf("the sample's overflows: %v, want max_requests 3", of)
	}
	if of := sampler.Sample(time.Now()).Services["api"].Overflow; of != nil {
		t.Fatalf("the next window repeats them: %v", of)
	}

	n.rewrite(conf("{max_requests: 3, max_retries: 1}"))
	if err := n.Reload(); err != nil {
		t.Fatal(err)
	}
	if st := circuitOf(t, n, "api"); st.MaxRequests != 5 || st.MaxRetries != 1 {
		t.Fatalf("after the reload: max_requests %d (want the policy's 5), max_retries %d (want the config's 1)", st.MaxRequests, st.MaxRetries)
	}
}

// The shipped example policies/circuit_per_replica.lua, the very file
// docs/policies.md shows, gives the breaker 4 requests per ready replica:
// 8 with two healthy backends, 12 once a third passes its health checks.
func TestShippedCircuitPolicyRaisesTheLimitAsReplicasComeUp(t *testing.T) {
	script, err := filepath.Abs("../policies/circuit_per_replica.lua")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(script); err != nil {
		t.Fatal(err)
	}
	var up atomic.Bool
	late := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	yaml := strings.Replace(nodeYAML("round_robin", backend(t, "a"), backend(t, "b"), late), "routes:",
		"    health: {path: /healthz, interval: 30ms, rise: 1, fall: 3}\nroutes:", 1) +
		fmt.Sprintf("policies:\n  breaker: {script: %q, interval: 50ms}\n", script)
	n := startNode(t, yaml)
	waitFor(t, "max_requests 8 for two ready replicas", func() bool {
		st := circuitOf(t, n, "api")
		return st.MaxRequests == 8 && st.MaxRequestsPerBackend == 4
	})
	up.Store(true)
	waitFor(t, "max_requests 12 for three", func() bool { return circuitOf(t, n, "api").MaxRequests == 12 })
	ds := decisionsOf(t, n, "circuit")
	last := ds[len(ds)-1]
	if !last.Applied || last.Target != "max_requests=12 max_requests_per_backend=4" || last.Reason != "3 ready × 4" {
		t.Fatalf("the last circuit decision: %+v", last)
	}
}

// A policy that sets the breaker on every evaluation while the config
// reloads again and again: neither waits for the other for good. Each
// evaluation runs 40ms before it acts and a reload comes 120ms after the
// last, while the restarted policy's first tick, at 100ms, is still
// running: a reload compiles the policies while one is about to set a
// circuit.
func TestCircuitPolicyAndReloadsDoNotDeadlock(t *testing.T) {
	script := filepath.Join(t.TempDir(), "busy.lua")
	writeFile(t, script, `function evaluate(m)
  local t = os.clock()
  while os.clock() - t < 0.04 do end
  state.n = ((state.n or 0) % 50) + 1
  circuit("api", {max_requests = state.n})
end
`)
	yaml := nodeYAML("round_robin", backend(t, "a")) + fmt.Sprintf("policies:\n  busy: {script: %q, interval: 100ms}\n", script)
	n := startNode(t, yaml)
	done := make(chan error, 1)
	go func() {
		for range 15 {
			time.Sleep(120 * time.Millisecond)
			if err := n.Reload(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("reloads stuck behind the policy's circuit action")
	}
	if ds := decisionsOf(t, n, "circuit"); len(ds) == 0 {
		t.Fatal("the policy set no circuit")
	}
}
