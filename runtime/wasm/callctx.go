package wasm

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// callCtx is the context of one instance's guest calls, reused from call to
// call. It carries the running exchange to the host functions and stops a
// call that overruns its deadline.
//
// wazero, with WithCloseOnContextDone, watches the context of every call
// and closes the module when it is done; the guest's loops check that flag,
// and wazero frees the module's resources on the calling goroutine, which
// makes this the safe way to interrupt a running guest (Module.Close from
// another goroutine would race with the guest's own WASI calls). So the
// deadline is kept as the channel Done returns, closed by a timer the
// instance keeps: a context.WithTimeout per call cost a timer, a channel
// and six allocations, twice per request.
type callCtx struct {
	x *exchange // the request being handled; nil between calls

	// deadline is the running call's, in nanoseconds on the monotonic
	// clock; 0 between calls and once expired.
	deadline atomic.Int64
	expired  chan struct{} // closed when a call overran: the instance is done for
	timer    *time.Timer   // runs expire at the deadline; stopped between calls
}

func newCallCtx() *callCtx { return &callCtx{expired: make(chan struct{})} }

// epoch anchors monotonic readings; time.Since uses the monotonic clock.
var epoch = time.Now()

func monotonic() int64 { return int64(time.Since(epoch)) }

// call runs fn on behalf of x, for at most timeout. A call whose deadline
// passes fails with sys.ExitCodeDeadlineExceeded, even when the guest
// returned just then: its context has expired, so the instance cannot be
// used again.
func (c *callCtx) call(x *exchange, fn api.Function, stack []uint64, timeout time.Duration) error {
	deadline := monotonic() + int64(timeout)
	c.deadline.Store(deadline)
	c.x = x
	if c.timer == nil {
		c.timer = time.AfterFunc(timeout, c.expire)
	} else {
		c.timer.Reset(timeout)
	}
	err := fn.CallWithStack(c, stack)
	c.timer.Stop()
	c.x = nil
	if !c.deadline.CompareAndSwap(deadline, 0) && err == nil {
		err = sys.NewExitError(sys.ExitCodeDeadlineExceeded)
	}
	return err
}

// expire runs on the timer's goroutine. A late run, left over from a call
// that finished in time, finds the next call's deadline still ahead.
func (c *callCtx) expire() {
	d := c.deadline.Load()
	if d != 0 && monotonic() >= d && c.deadline.CompareAndSwap(d, 0) {
		close(c.expired)
	}
}

func (c *callCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

func (c *callCtx) Done() <-chan struct{} { return c.expired }

func (c *callCtx) Err() error {
	select {
	case <-c.expired:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (c *callCtx) Value(k any) any {
	if k == (exchangeKey{}) && c.x != nil {
		return c.x
	}
	return nil
}
