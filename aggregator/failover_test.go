package aggregator_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
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

// A node whose clock runs ten minutes fast learns its offset from the
// aggregator and corrects its times before it seals a batch, so a batch
// stored by two aggregators (the first's answer lost, resent to the second
// by failover) holds the same times in both.
func TestFastClockBatchIsStoredAlikeByTwoAggregators(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	a := startAggregator(t, func(c *aggregator.Config) { c.DataDir = dirA })
	copyDevCert(t, dirA, dirB)
	b := startAggregator(t, func(c *aggregator.Config) { c.DataDir = dirB })
	// In front of a: passes everything through, but loses a's answer to
	// the first batch it stored.
	var lost atomic.Bool
	proxy := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, _ := http.NewRequest(r.Method, a.url(r.URL.Path), bytes.NewReader(body))
		req.Header = r.Header.Clone()
		resp, err := a.client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		answer, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK && lost.CompareAndSwap(false, true) {
			http.Error(w, "answer lost on the way", http.StatusBadGateway)
			return
		}
		for k, v := range resp.Header {
			if k != "Alt-Svc" { // the proxy does not do HTTP/3
				w.Header()[k] = v
			}
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(answer)
	}))
	defer proxy.Close()
	fast := func() time.Time { return time.Now().Add(10 * time.Minute) }
	s := newShipper(t, a, "node-a", tokenA, func(c *ship.Config) {
		c.Aggregator, c.Failover, c.InsecureSkipVerify = proxy.URL, []string{"https://" + b.addr}, true
		c.Clock = fast
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	eventually(t, "the shipper to learn its clock offset", func() bool { return s.Stats().ClockOffset > 9*time.Minute })
	for i := range 50 {
		s.AddDecision(telemetry.Decision{Time: fast(), Region: "eu-west", Action: "weight", Value: float64(i + 1)})
		time.Sleep(2 * time.Millisecond)
	}
	eventually(t, "every batch to be acknowledged", func() bool {
		st := s.Stats()
		return st.PendingRecords == 0 && st.SpooledBatches == 0 && st.RecordsAcked.Decisions == 50
	})
	cancel()
	<-done
	if !lost.Load() {
		t.Fatal("no answer was lost: no batch reached both aggregators")
	}
	times := func(g *agg) map[float64]time.Time {
		var d struct{ Decisions []telemetry.Decision }
		g.getJSON(t, "/v1/decisions?node=node-a&limit=10000", &d)
		out := map[float64]time.Time{}
		for _, x := range d.Decisions {
			out[x.Value] = x.Time
		}
		return out
	}
	inA, inB := times(a), times(b)
	if len(inA) == 0 {
		t.Fatal("the aggregator whose answer was lost stored nothing")
	}
	for v, ta := range inA {
		if tb, ok := inB[v]; !ok || !ta.Equal(tb) {
			t.Errorf("decision %v: stored at %v by one aggregator and %v (found %v) by the other", v, ta, tb, ok)
		}
		if d := time.Until(ta); d > time.Minute {
			t.Errorf("decision %v stored %v in the future", v, d)
		}
	}
	for _, g := range []*agg{a, b} {
		if n, ok := fleetNode(t, g, "node-a"); !ok || n.ClockSkewSeconds > 60 {
			t.Errorf("node-a clock skew at an aggregator %v s (found %v); the node should have corrected it", n.ClockSkewSeconds, ok)
		}
	}
}
