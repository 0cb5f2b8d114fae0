package policies

import (
	"testing"
	"time"
)

// A window fed every 50 ms for two hours with ever lower values (each one
// could be the maximum later) keeps a bounded number of them, and answers
// the maximum of the last hour, or one at most a slot older, which errs
// towards holding.
func TestExtremeStaysSmallAndRight(t *testing.T) {
	q := extreme{sign: 1}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const n, step = 144000, 50 * time.Millisecond
	var got int
	for i := range n {
		got = q.add(start.Add(time.Duration(i)*step), n-i, time.Hour)
		if len(q.v) > extremeSlots+1 {
			t.Fatalf("%d values kept for one window", len(q.v))
		}
	}
	oldest := n - 1 - int(time.Hour/step) // the oldest sample in the window
	truth, slot := n-oldest, int(time.Hour/extremeSlots/step)+1
	if got < truth || got > truth+slot {
		t.Fatalf("maximum %d, want %d to %d", got, truth, truth+slot)
	}

	q = extreme{sign: 1}
	window := 2*time.Minute + time.Second
	for i, v := range []int{3, 9, 4, 2} {
		got = q.add(start.Add(time.Duration(i)*time.Minute), v, window)
	}
	if got != 9 {
		t.Fatalf("max over the window = %d, want 9", got)
	}
	if got = q.add(start.Add(4*time.Minute), 1, window); got != 4 {
		t.Fatalf("after 9 left the window: max %d, want 4", got)
	}
}
