package aggregator_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/telemetry"
	"perigee/telemetry/ship"
)

// copyDevCert gives dir the development certificate of another data
// directory, so one CA file trusts both aggregators.
func copyDevCert(t *testing.T, from, to string) {
	t.Helper()
	for _, name := range []string{"cert.pem", "key.pem"} {
		b, err := os.ReadFile(filepath.Join(from, "dev-tls", name))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(to, "dev-tls"), 0o700)
		if err := os.WriteFile(filepath.Join(to, "dev-tls", name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// A node given two aggregators keeps delivering when the one it uses
// stops: every record lands in one of them, once.
func TestShipperFailsOverToTheNextAggregator(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	a := startAggregator(t, func(c *aggregator.Config) { c.DataDir = dirA })
	copyDevCert(t, dirA, dirB)
	b := startAggregator(t, func(c *aggregator.Config) { c.DataDir = dirB })
	s := newShipper(t, a, "node-a", tokenA, func(c *ship.Config) { c.Failover = []string{"https://" + b.addr} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()

	produced := 0
	produce := func(until func() bool) {
		deadline := time.Now().Add(60 * time.Second)
		for !until() {
			if time.Now().After(deadline) {
				t.Fatalf("no progress after %d records: %+v", produced, s.Stats())
			}
			produced++
			s.AddDecision(telemetry.Decision{Time: time.Now(), Region: "eu-west", Action: "weight", Value: float64(produced)})
			time.Sleep(5 * time.Millisecond)
		}
	}
	produce(func() bool { return s.Stats().BatchesAcked >= 10 })
	a.stop()
	acked := s.Stats().BatchesAcked
	produce(func() bool { return s.Stats().BatchesAcked >= acked+10 })
	eventually(t, "the spool to drain", func() bool {
		st := s.Stats()
		return st.SpooledBatches == 0 && st.PendingRecords == 0
	})
	cancel()
	<-done

	a = startAggregator(t, func(c *aggregator.Config) { c.DataDir = dirA })
	// The restarted aggregator fills its view from the store after it
	// listens; until then it holds part of its decisions, and says so.
	eventually(t, "the restarted aggregator's view to be warm", func() bool {
		var v aggregator.FleetView
		a.getJSON(t, "/v1/fleet", &v)
		return !v.Warming
	})
	seen := map[float64]int{}
	for _, g := range []*agg{a, b} {
		var d struct{ Decisions []telemetry.Decision }
		g.getJSON(t, "/v1/decisions?node=node-a&limit=10000", &d)
		for _, x := range d.Decisions {
			seen[x.Value]++
		}
	}
	for i := 1; i <= produced; i++ {
		if seen[float64(i)] != 1 {
			t.Fatalf("decision %d of %d stored %d times across the two aggregators", i, produced, seen[float64(i)])
		}
	}
}
