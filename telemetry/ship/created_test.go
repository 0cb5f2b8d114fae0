package ship

import (
	"testing"
	"time"
)

// Batch times of one node are at least a millisecond apart (the wire's
// resolution), so an engine deduplicating per millisecond never merges the
// counts of two batches, however fast they are cut.
func TestBatchTimesAreAMillisecondApart(t *testing.T) {
	t0 := time.UnixMilli(1_700_000_000_000).Add(900 * time.Microsecond)
	prev := time.Time{}
	for i, now := range []time.Time{t0, t0, t0.Add(100 * time.Microsecond), t0.Add(5 * time.Millisecond), t0.Add(5 * time.Millisecond)} {
		got := batchTime(prev, now)
		if got.Before(now) {
			t.Fatalf("batch %d stamped %v, before its cut at %v", i, got, now)
		}
		if !prev.IsZero() && got.UnixMilli() <= prev.UnixMilli() {
			t.Fatalf("batch %d stamped %d ms, not after the previous %d ms", i, got.UnixMilli(), prev.UnixMilli())
		}
		prev = got
	}
}
