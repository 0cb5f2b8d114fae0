package policies_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/mesh"
	"perigee/mesh/faultnet"
	"perigee/policies"
	"perigee/policies/actuator"
	"perigee/telemetry"
	"perigee/units"
)

// meshSource is a node's Source as edge/scaling builds it: fixed figures,
// and the mesh's leadership.
type meshSource struct{ c *mesh.Cluster }

func (s meshSource) Snapshot() policies.Snapshot {
	return policies.Snapshot{Services: map[string]policies.ServiceFigures{"api": {RPS: 10}}}
}
func (s meshSource) Leadership() (uint64, bool) { return s.c.Leadership() }

// fencingReceiver is a webhook endpoint that keeps the highest term it has
// accepted and refuses writes under a lower one, as docs/policies.md asks
// of receivers. It records every write that reaches it.
type fencingReceiver struct {
	mu       sync.Mutex
	high     uint64
	owner    map[uint64]string
	accepted []string
	refused  int
	shared   []string // a term written by two nodes
}

func (f *fencingReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var b actuator.WebhookBody
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if o, ok := f.owner[b.Term]; ok && o != b.Reason {
		f.shared = append(f.shared, fmt.Sprintf("term %d: %s and %s", b.Term, o, b.Reason))
	}
	f.owner[b.Term] = b.Reason
	if b.Term < f.high {
		f.refused++
		http.Error(w, "stale term", http.StatusConflict)
		return
	}
	f.high = b.Term
	f.accepted = append(f.accepted, fmt.Sprintf("%s@%d", b.Reason, b.Term))
}

func (f *fencingReceiver) writers() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]bool{}
	for _, o := range f.owner {
		out[o] = true
	}
	return out
}

// Three real mesh members on a fault-injecting network, each running the
// engine with a webhook actuator against one receiver. The leader is cut
// off for a while (its webhook still reaches the receiver, as a paused or
// partitioned node's would) and comes back. No term is ever written by two
// nodes, and the receiver, by refusing lower terms, accepts writes in
// increasing terms only. (Until the cut-off leader's memberlist declares
// its peers dead it still believes it leads and writes under its old
// term; the fence is what refuses those: the log shows how many.)
func TestRealMeshLeadersNeverShareATerm(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a mesh for about half a minute")
	}
	recv := &fencingReceiver{owner: map[uint64]string{}}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	nw := faultnet.New()
	tuning := func(mc *memberlist.Config) {
		mc.ProbeInterval, mc.ProbeTimeout = 500*time.Millisecond, 400*time.Millisecond
		mc.GossipInterval, mc.PushPullInterval = 100*time.Millisecond, 2*time.Second
		mc.SuspicionMult, mc.GossipToTheDeadTime, mc.DeadNodeReclaimTime = 3, 2*time.Second, time.Second
		mc.TCPTimeout = 2 * time.Second
	}
	timing := mesh.Timing{Sample: 100 * time.Millisecond, Refresh: 500 * time.Millisecond, StaleAfter: 10 * time.Second, Rejoin: 300 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var seed []string
	clusters := map[string]*mesh.Cluster{}
	var engines []*policies.Engine
	off := units.Duration(0)
	free := actuator.Rate{Percent: 1000000, Period: units.Duration(time.Second)}
	for i := range 3 {
		id := fmt.Sprintf("m-%d", i)
		tr, err := nw.Transport(id, "eu", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := mesh.Start(ctx, mesh.Config{Join: seed, Transport: tr, Tuning: tuning, Timing: timing},
			mesh.NodeMeta{ID: id, Region: "eu", Capacity: 1, PublicURL: "https://" + id + ".example.net"},
			func() telemetry.NodeSample { return telemetry.NodeSample{} }, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Shutdown() })
		if seed == nil {
			seed = []string{tr.Addr()}
		}
		clusters[id] = c
		hook, err := actuator.NewWebhook("api", actuator.WebhookSpec{URL: srv.URL, Secret: "s", Attempts: 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		e, err := policies.NewEngine(policies.EngineConfig{
			Node: id, Region: "eu",
			// A new count every evaluation, so that every tick writes.
			Policies: []policies.Spec{{Name: "p", Script: "p.lua", Interval: units.Duration(100 * time.Millisecond), Source: `
function evaluate(m) state.n = ((state.n or 0) % 9) + 1; scale("api", state.n, m.node.name) end`}},
			Bounds:    map[string]policies.ServiceBounds{"api": {Min: 1, Max: 10, Behavior: actuator.Behavior{DownWindow: &off, UpWindow: &off, Up: free, Down: free}}},
			Source:    meshSource{c},
			Actuators: map[string]actuator.Actuator{"api": hook},
		})
		if err != nil {
			t.Fatal(err)
		}
		engines = append(engines, e)
		wg.Go(func() { e.Run(ctx) })
	}
	leader := func() string {
		for id, c := range clusters {
			if _, ok := c.Leadership(); ok {
				return id
			}
		}
		return ""
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(45 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting: %s (accepted %v)", what, recv.accepted)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wait("a leader writing", func() bool { return leader() != "" && len(recv.writers()) > 0 })
	first := leader()
	nw.Isolate(first)
	wait("another node leading and writing", func() bool {
		w := recv.writers()
		return len(w) > 1 && leader() != first && leader() != ""
	})
	time.Sleep(2 * time.Second)
	nw.Heal()
	time.Sleep(3 * time.Second)
	cancel()
	wg.Wait()

	recv.mu.Lock()
	defer recv.mu.Unlock()
	if len(recv.shared) > 0 {
		t.Errorf("terms written by two nodes: %v", recv.shared)
	}
	if len(recv.owner) < 2 {
		t.Errorf("writes under %d terms, want the first leader's and its successor's: %v", len(recv.owner), recv.owner)
	}
	for _, e := range engines {
		why := map[string]int{}
		for _, d := range e.Decisions(1000) {
			why[d.Rejected]++
		}
		t.Logf("decisions by outcome: %v", why)
	}
	t.Logf("%d writes accepted, %d refused as stale; terms: %v", len(recv.accepted), recv.refused, recv.owner)
}
