package aggregator

import (
	"runtime"
	"testing"
	"time"

	"perigee/aggregator/store"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// The dedup window remembers exactly the dedupWindow sequences below the
// highest, survives a checkpoint, and takes the same memory after a
// million batches as after one (the map of every id it replaces grew to
// tens of millions of entries and was pruned under the ingest lock).
func TestDedupWindowIsExactAndBounded(t *testing.T) {
	d := newDedup()
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	const n = 1_000_000
	for seq := uint64(1); seq <= n; seq++ {
		if seq%3 == 0 {
			continue // dropped by the node, never sent
		}
		if d.reserve("a", seq, store.Pos{}) != claimed || !d.commit("a", seq, 1) {
			t.Fatalf("seq %d not new", seq)
		}
	}
	if grew := int64(heap()) - int64(before); grew > 64<<10 {
		t.Fatalf("dedup state grew by %d KiB over %d batches", grew>>10, n)
	}
	check := func(d *dedup, when string) {
		for _, c := range []struct {
			seq  uint64
			want reservation
		}{{n, duplicate}, {n - 1, claimed}, {n - 2, duplicate}, {n - dedupWindow + 1, duplicate}, {n + 5, claimed}, {5, claimed}} {
			got := d.reserve("a", c.seq, store.Pos{})
			if got != c.want {
				t.Fatalf("%s: seq %d: got %v, want %v", when, c.seq, got, c.want)
			}
			d.release("a", c.seq)
		}
	}
	check(d, "in memory")
	dir := t.TempDir()
	if err := d.save(dir, store.Pos{Seg: 3, Off: 99}); err != nil {
		t.Fatal(err)
	}
	again := newDedup()
	pos, err := again.load(dir)
	if err != nil || pos != (store.Pos{Seg: 3, Off: 99}) {
		t.Fatalf("load: %v at %+v", err, pos)
	}
	check(again, "after checkpoint")
	if b, r := again.totals(); b != n-n/3 || r != b {
		t.Fatalf("totals %d batches %d records", b, r)
	}
}

// A batch being stored while a checkpoint is taken moves the checkpoint's
// position back to before it, so a crash right after cannot forget it.
func TestCheckpointCoversBatchesInFlight(t *testing.T) {
	d := newDedup()
	d.reserve("a", 7, store.Pos{Seg: 2, Off: 10})
	dir := t.TempDir()
	if err := d.save(dir, store.Pos{Seg: 2, Off: 500}); err != nil {
		t.Fatal(err)
	}
	pos, err := newDedup().load(dir)
	if err != nil || pos != (store.Pos{Seg: 2, Off: 10}) {
		t.Fatalf("checkpoint at %+v (%v), want before the batch in flight", pos, err)
	}
}

// The in-memory view holds the memory window of samples per node, however
// many arrive.
func TestFleetHoldsOnlyTheWindow(t *testing.T) {
	f := newFleet(time.Hour)
	start := time.Now().Add(-48 * time.Hour)
	for i := range 10 * 3600 / 5 { // ten hours of 5 s samples
		at := start.Add(time.Duration(i) * 5 * time.Second)
		f.apply(&wire.Batch{Node: "a", Seq: uint64(i), Created: at,
			Samples: []telemetry.NodeSample{{Node: "a", Time: at, RPS: 1}}}, at, 0)
	}
	if got, want := len(f.nodes["a"].points), 3600/5+1; got > want {
		t.Fatalf("%d samples held, want at most the hour's %d", got, want)
	}
}
