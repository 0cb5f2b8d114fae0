package lua

import (
	"context"
	"runtime/metrics"
	"time"
)

// allocPoll is how often the watchdog reads the allocation counter. A
// runaway loop overshoots the budget by at most what it allocates in one
// poll plus one Lua instruction.
const allocPoll = 2 * time.Millisecond

const allocMetric = "/gc/heap/allocs:bytes"

// guard derives the context of one call: it carries the deadline, and a
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
	done := make(chan struct{})
	finished := make(chan struct{})
	sample := []metrics.Sample{{Name: allocMetric}}
	metrics.Read(sample)
	start := sample[0].Value.Uint64()
	go func() {
		defer close(finished)
		t := time.NewTicker(allocPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				metrics.Read(sample)
				if sample[0].Value.Uint64()-start > vm.limits.AllocBytes {
					cancel(ErrAllocation)
					return
				}
			}
		}
	}()
	return ctx, func() {
		close(done)
		<-finished
		cancel(nil)
		cancelTimeout()
	}
}
