package wasm

import (
	"context"
	"testing"
	"time"
)

// The timer of a call that finished in time may still run while the next
// call is under way; it must leave that call alone.
func TestLateTimerSparesNextCall(t *testing.T) {
	c := newCallCtx()
	c.deadline.Store(monotonic() + int64(time.Hour))
	c.expire()
	if c.Err() != nil {
		t.Fatal("a call was stopped before its deadline")
	}
	c.deadline.Store(monotonic() - 1)
	c.expire()
	if c.Err() != context.DeadlineExceeded || c.deadline.Load() != 0 {
		t.Fatalf("overdue call: err %v, deadline %d; want deadline exceeded, 0", c.Err(), c.deadline.Load())
	}
}
