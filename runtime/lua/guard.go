package lua

import (
	"context"
	"runtime/metrics"
	"sync"
	"time"
)

// allocPoll is how often the watchdog reads the allocation counter while a
// call runs. A runaway loop overshoots the budget by at most what it
// allocates in one poll plus one Lua instruction. Polling on time rather
// than every N instructions matters: one instruction (s = s .. s) can
// allocate without bound, and the time it takes to do so is what bounds it.
const allocPoll = 2 * time.Millisecond

const allocMetric = "/gc/heap/allocs:bytes"

// watchdog stops a call that allocates more than its budget. It is one
// goroutine per VM that sleeps between calls, so a call costs a counter
// read and a wake-up instead of a goroutine and a ticker of its own.
type watchdog struct {
	budget uint64
	wake   chan struct{}
	quit   chan struct{}

	mu     sync.Mutex
	cancel context.CancelCauseFunc // of the running call; nil between calls
	start  uint64                  // the allocation counter when it began
}

func newWatchdog(budget uint64) *watchdog {
	w := &watchdog{budget: budget, wake: make(chan struct{}, 1), quit: make(chan struct{})}
	go w.run()
	return w
}

func readAllocated(s []metrics.Sample) uint64 {
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// allocated is the process's allocation counter.
func allocated() uint64 { return readAllocated([]metrics.Sample{{Name: allocMetric}}) }

// watch starts watching a call that cancel stops.
func (w *watchdog) watch(cancel context.CancelCauseFunc) {
	start := allocated()
	w.mu.Lock()
	w.cancel, w.start = cancel, start
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default: // already awake
	}
}

// done ends the watch of the current call.
func (w *watchdog) done() {
	w.mu.Lock()
	w.cancel = nil
	w.mu.Unlock()
}

func (w *watchdog) close() { close(w.quit) }

func (w *watchdog) run() {
	sample := []metrics.Sample{{Name: allocMetric}}
	t := time.NewTicker(allocPoll)
	defer t.Stop()
	for {
		t.Stop()
		select {
		case <-w.quit:
			return
		case <-w.wake:
		}
		t.Reset(allocPoll)
		for w.check(sample) {
			select {
			case <-w.quit:
				return
			case <-t.C:
			}
		}
	}
}

// check cancels the running call if it is over budget, and reports whether
// there is still a call to watch.
func (w *watchdog) check(sample []metrics.Sample) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancel == nil {
		return false
	}
	if readAllocated(sample)-w.start > w.budget {
		w.cancel(ErrAllocation)
		w.cancel = nil
		return false
	}
	return true
}

// guard derives the context of one call: it carries the deadline, and the
// watchdog cancels it with ErrAllocation once the process has allocated
// more than the budget since the call began. gopher-lua checks the context
// before every instruction, so either stops the script at its next step.
func (vm *VM) guard(parent context.Context) (context.Context, func()) {
	ctx := parent
	cancelTimeout := func() {}
	if vm.limits.Timeout > 0 {
		ctx, cancelTimeout = context.WithTimeout(parent, vm.limits.Timeout)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	if vm.dog == nil {
		vm.dog = newWatchdog(vm.limits.AllocBytes)
	}
	vm.dog.watch(cancel)
	return ctx, func() {
		vm.dog.done()
		cancel(nil)
		cancelTimeout()
	}
}
