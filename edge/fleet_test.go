package edge

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"perigee/geo/rtt"
	"perigee/mesh"
	"perigee/telemetry"
)

// Issue 13, defect 8: the geo side kept every departed node's client-RTT
// summary. Once the mesh forgets a node, the fleet view forgets its
// summary, and the learner its measurements.
func TestFleetViewForgetsWhatTheMeshForgot(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	timing := mesh.Timing{Sample: 50 * time.Millisecond, Refresh: 200 * time.Millisecond, StaleAfter: 500 * time.Millisecond, Rejoin: 200 * time.Millisecond}
	start := func(id, bind string, join ...string) *mesh.Cluster {
		cfg := mesh.Config{Bind: bind, Join: join, Timing: timing}
		c, err := mesh.Start(context.Background(), cfg, mesh.NodeMeta{ID: id, Region: "r", PublicURL: "https://" + id + ".example.net"},
			func() telemetry.NodeSample { return telemetry.NodeSample{} }, quiet)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	seedAddr := freePort(t)
	a := start("a", seedAddr)
	t.Cleanup(func() { a.Shutdown() })
	b := start("b", freePort(t), seedAddr)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			b.Shutdown()
		}
	})
	// b has measured clients and says so in its reports.
	bl := rtt.NewLearner(rtt.Config{Self: "b", SummaryBytes: 512})
	for i := range 20 {
		bl.Observe(netip.AddrFrom4([4]byte{81, byte(i), 1, 1}), 30*time.Millisecond)
	}
	if err := b.SetExtra(rttKey, bl.Summary()); err != nil {
		t.Fatal(err)
	}

	f := &meshFleet{cluster: a, learner: rtt.NewLearner(rtt.Config{Self: "a"})}
	peers := func() []string {
		f.view()
		return f.learner.Peers()
	}
	waitFor(t, "a to learn b's client RTTs", func() bool { return slices.Contains(peers(), "b") })

	b.Leave(time.Second)
	b.Shutdown()
	stopped = true
	waitFor(t, "the mesh to forget b", func() bool {
		for _, m := range a.Members() {
			if m.Meta.ID == "b" {
				return false
			}
		}
		return true
	})
	time.Sleep(fleetRefresh) // past the view's cache
	if got := peers(); slices.Contains(got, "b") {
		t.Errorf("learner still holds b: %v", got)
	}
	f.mu.Lock()
	_, kept := f.summary["b"]
	f.mu.Unlock()
	if kept {
		t.Error("fleet view still holds b's summary")
	}
}
