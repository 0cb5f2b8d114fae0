package wasm

import (
	"context"
	"crypto/rand"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// callCtx is the context of one instance's guest calls, reused from call to
// call. It carries the running exchange to the host functions and keeps the
// call's deadline.
//
// A metered guest (package meter) comes back to the host each slice of fuel
// and is stopped there once Err reports the deadline passed; a guest inside
// a host function that blocks on the client (reading the request body,
// writing an unbuffered response) is reached through blocked, whose
// connection deadline the timer moves to now. The deadline is kept as the
// channel Done returns, closed by a timer the instance keeps: a
// context.WithTimeout per call cost a timer, a channel and six allocations,
// twice per request.
type callCtx struct {
	x *exchange // the request being handled; nil between calls
	// guest is a proxy-wasm instance's callbacks, which host functions
	// need to allocate in guest memory.
	guest *proxyGuest

	// deadline is the running call's, in nanoseconds on the monotonic
	// clock; 0 between calls and once expired.
	deadline atomic.Int64
	expired  chan struct{} // closed when a call overran: the instance is done for
	timer    *time.Timer   // runs expire at the deadline; stopped between calls
	blocked  atomic.Pointer[blockedIO]
	// abandoned is set by abandon: every call stops as soon as it starts.
	abandoned atomic.Bool
}

// blockedIO is a host function waiting on the client's connection.
type blockedIO struct {
	rc    *http.ResponseController
	write bool
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
	if c.abandoned.Load() { // after the store: abandon sees this call, or this call sees abandon
		c.stop(deadline)
	}
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
		err = errDeadline
	}
	return err
}

// expire runs on the timer's goroutine. A late run, left over from a call
// that finished in time, finds the next call's deadline still ahead.
func (c *callCtx) expire() {
	if d := c.deadline.Load(); d != 0 && monotonic() >= d {
		c.stop(d)
	}
}

// abandon stops the running call now, as its deadline would, and every
// later one as it starts: the instance is given up (its transform stopped
// while it was being made).
func (c *callCtx) abandon() {
	c.abandoned.Store(true)
	if d := c.deadline.Load(); d != 0 {
		c.stop(d)
	}
}

// stop ends the call whose deadline is d, unless it has ended already.
func (c *callCtx) stop(d int64) {
	if !c.deadline.CompareAndSwap(d, 0) {
		return
	}
	close(c.expired)
	if b := c.blocked.Load(); b != nil {
		if b.write {
			b.rc.SetWriteDeadline(time.Now())
		} else {
			b.rc.SetReadDeadline(time.Now())
		}
	}
}

// errDeadline is what a host function panics with to stop a guest whose
// call is past its deadline.
var errDeadline = sys.NewExitError(sys.ExitCodeDeadlineExceeded)

// blockingIO runs io, which may wait on the client for as long as the
// client likes, within the call's deadline: past it, the connection's
// deadline is moved to now, which ends the wait, and the guest is stopped.
// (Where the connection has no deadlines to set, the server's own
// timeouts are the bound.)
func (c *callCtx) blockingIO(w http.ResponseWriter, write bool, io func()) {
	c.blocked.Store(&blockedIO{rc: http.NewResponseController(w), write: write})
	if c.Err() == nil {
		io()
	}
	c.blocked.Store(nil)
	if c.Err() != nil {
		panic(errDeadline)
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
	if k == (proxyGuestKey{}) && c.guest != nil {
		return c.guest
	}
	return nil
}

// guestRand is an instance's WASI random source. It reads in chunks and
// fails past the call's deadline, so that random_get over the whole guest
// memory, called in a loop, stops there too.
type guestRand struct{ call *callCtx }

const randChunk = 64 << 10

func (g guestRand) Read(p []byte) (int, error) {
	if err := g.call.Err(); err != nil {
		return 0, err
	}
	return rand.Read(p[:min(len(p), randChunk)])
}
