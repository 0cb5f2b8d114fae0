package aggregator

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"perigee/memtest"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// The aggregator's heap is bounded by its nodes and tiers, not by what it
// has stored (issue 14: "500 nodes × 7 days ≈ 300 M points" must not be
// held): storing twice the samples (the same nodes for twice as long)
// leaves the heap where it was. Time is simulated through the arrival
// times, so the store rotates its segments and they are rolled up as in
// a real run.
func TestHeapDoesNotGrowWithStoredSamples(t *testing.T) {
	s := memoryServer(t, 15*time.Minute)
	sealer, err := wire.NewSealer(wire.CodecZstd, wire.DefaultLevel)
	if err != nil {
		t.Fatal(err)
	}
	var h telemetry.Histogram
	for i := range 100 {
		h.Observe(time.Duration(i) * 300 * time.Microsecond)
	}
	const nodes, perBatch = 20, 600 // a batch every 10 minutes, a sample a second
	at := time.Now()                // and on, simulated: segments rotate by their records' times
	seq := uint64(0)
	stored := 0
	feed := func(hours int) {
		for range hours * 6 {
			seq++
			for n := range nodes {
				b := &wire.Batch{Node: fmt.Sprintf("node-%02d", n), Seq: seq, Created: at}
				for j := range perBatch {
					b.Samples = append(b.Samples, telemetry.NodeSample{Node: b.Node, Region: "eu-west", Time: at.Add(time.Duration(j-perBatch) * time.Second),
						RPS: float64(j), CPU: 0.5, Services: map[string]telemetry.ServiceSample{"api": {RPS: float64(j), Latency: h.Snapshot()}}})
				}
				frame := sealer.Seal(b)
				if err := s.keep(at, frame, b); err != nil {
					t.Fatal(err)
				}
				stored += perBatch
			}
			at = at.Add(10 * time.Minute)
			s.writeRollups(context.Background(), false)
		}
	}
	feed(6)
	n1, h1 := stored, memtest.LiveHeap()
	feed(6)
	n2, h2 := stored, memtest.LiveHeap()
	t.Logf("heap %.1f MiB after %d stored samples, %.1f MiB after %d", float64(h1)/(1<<20), n1, float64(h2)/(1<<20), n2)
	// Holding even 5 bytes per added sample would grow it by 2 MiB.
	if grew := h2 - h1; grew > 2<<20 {
		t.Fatalf("heap grew %.1f MiB for %d more stored samples", float64(grew)/(1<<20), n2-n1)
	}
	if segs := len(s.store.Segments()); segs < 12 {
		t.Fatalf("%d segments: the simulated hours did not rotate the store", segs)
	}
}

// The fleet view's compact histogram gives back exactly the snapshot it
// was made from, leading and trailing empty buckets aside.
func TestCompactHistogramIsExact(t *testing.T) {
	var h telemetry.Histogram
	for i := range 500 {
		h.Observe(time.Millisecond + time.Duration(i*i)*time.Microsecond)
	}
	snap := h.Snapshot()
	snap.Counts = append(snap.Counts, 0, 0)
	var back telemetry.HistogramSnapshot
	compact(snap).addTo(&back)
	compact(snap).addTo(&back) // and twice is twice
	// The counts agree, and below they add up to all of them.
	for i, c := range back.Counts {
		if c != 2*snap.Counts[i] {
			t.Fatalf("bucket %d: %d, want %d", i, c, 2*snap.Counts[i])
		}
	}
	if back.Count() != 2*snap.Count() || back.SumUS != 2*snap.SumUS || back.Quantile(0.99) != snap.Quantile(0.99) {
		t.Fatalf("count %d sum %d p99 %v, want %d %d %v", back.Count(), back.SumUS, back.Quantile(0.99), 2*snap.Count(), 2*snap.SumUS, snap.Quantile(0.99))
	}
	if empty := compact(telemetry.HistogramSnapshot{}); empty.counts != nil {
		t.Fatalf("an empty histogram holds %d counts", len(empty.counts))
	}
}

// A node with a valid token can still send what no real node does: a
// batch of 65,536 samples, each in a region of its own. The rollup of a
// segment that diverse gives up (its queries read its records) and the
// fleet view keeps a bounded number of samples per node, so four such
// batches cost the heap little, and a long query still counts them all.
func TestDiverseSamplesCostBoundedMemory(t *testing.T) {
	s := memoryServer(t, time.Minute)
	sealer, err := wire.NewSealer(wire.CodecZstd, wire.DefaultLevel)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	at := now.Add(-30 * time.Minute)
	var frames [][]byte
	for k := range 4 {
		b := &wire.Batch{Node: "hostile", Seq: uint64(k + 1), Created: now}
		for j := range wire.MaxRecords {
			b.Samples = append(b.Samples, telemetry.NodeSample{Node: "hostile", Region: fmt.Sprintf("r-%d-%d", k, j), Time: at, RPS: 1})
		}
		frames = append(frames, sealer.Seal(b))
	}
	before := memtest.LiveHeap()
	for _, f := range frames {
		fr, err := wire.ParseFrame(f, -1)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.opener.Open(fr)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.keep(now, f, b); err != nil {
			t.Fatal(err)
		}
	}
	grew := memtest.LiveHeap() - before
	t.Logf("heap grew %.1f MiB for %d samples in as many regions", float64(grew)/(1<<20), 4*wire.MaxRecords)
	if grew > 32<<20 { // without the bounds: 130 MiB
		t.Fatalf("heap grew %.1f MiB", float64(grew)/(1<<20))
	}
	check := func(when string) {
		points, err := s.seriesFromTier(context.Background(), 0, func(string, string) bool { return true }, now.Add(-time.Hour), now, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(points) != 1 || points[0].RPS != 1 || points[0].Nodes != 1 {
			t.Fatalf("%s: series %+v, want one point of rps 1 from the one node", when, points)
		}
	}
	check("segment being written")
	// Written out, the rollup says it gave up, and queries still read the
	// records.
	s.writeRollups(context.Background(), true)
	if _, err := os.Stat(s.rollups.path(s.store.Segments()[0].ID, 0)); err != nil {
		t.Fatal(err)
	}
	check("rollup written")
}

// memoryServer is a server whose listeners are bound but not serving: the
// memory tests feed its ingest directly.
func memoryServer(t *testing.T, window time.Duration) *server {
	t.Helper()
	srv, err := NewServer(Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Tokens: map[string]string{"*": "token-of-everyone-0123456789"},
		MemoryWindow: window}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.tcp.Close()
		srv.udp.Close()
		srv.s.store.Close()
	})
	return srv.s
}
