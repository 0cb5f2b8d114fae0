package wasm

import (
	"context"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// minTickPeriod bounds how often a filter's proxy_on_tick may run.
const minTickPeriod = 10 * time.Millisecond

// setTickPeriod is proxy_set_tick_period_milliseconds: the transform's root
// context ticks at the period (the last any of its instances set; 0
// stops), on one idle instance per tick: the pool is one plugin.
func (p proxyABI) setTickPeriod(_ context.Context, _ api.Module, stack []uint64) {
	if p.t == nil {
		stack[0] = statusBadArgument
		return
	}
	period := time.Duration(uint32(stack[0])) * time.Millisecond
	if period != 0 {
		period = max(period, minTickPeriod)
	}
	p.t.tickPeriod.Store(int64(period))
	if period != 0 {
		p.t.tickOnce.Do(func() {
			p.t.refills.Add(1)
			go p.t.ticker()
		})
	}
	stack[0] = statusOK
}

func (t *Transform) ticker() {
	defer t.refills.Done()
	for {
		period := time.Duration(t.tickPeriod.Load())
		if period == 0 {
			period = time.Second // stopped: look again later
		}
		timer := time.NewTimer(period)
		select {
		case <-t.stop:
			timer.Stop()
			return
		case <-timer.C:
		}
		if t.tickPeriod.Load() != 0 {
			t.rootCall(func(g *proxyGuest) api.Function { return g.tick }, 0)
		}
	}
}

// notifyQueue runs proxy_on_queue_ready for a new item, in the background;
// with as many notifications pending as the pool has instances, further
// ones are dropped: the items wait in the queue for the next.
func (t *Transform) notifyQueue(id uint32) {
	// The reference keeps the transform from shutting down (and waiting
	// for its goroutines) while this one starts.
	if !t.Retain() {
		return
	}
	select {
	case t.pending <- struct{}{}:
	default:
		t.Release()
		return
	}
	t.refills.Add(1)
	go func() {
		defer t.refills.Done()
		defer t.Release()
		defer func() { <-t.pending }()
		t.rootCall(func(g *proxyGuest) api.Function { return g.queueReady }, uint64(id))
	}()
}

// rootCall runs a root-context callback (with the root id, then arg) on an
// idle instance, outside any request, and answers the HTTP calls it
// dispatched before the instance goes back.
func (t *Transform) rootCall(pick func(*proxyGuest) api.Function, arg uint64) {
	if t.closed.Load() || !t.Retain() {
		return
	}
	defer t.Release()
	inst, err := t.acquire(context.Background())
	if err != nil {
		t.stats.busy.Add(1)
		return
	}
	g := inst.proxy
	fn := pick(g)
	if fn == nil {
		t.put(inst)
		return
	}
	x := &exchange{t: t, inst: inst, pw: &proxyState{id: g.rootID}}
	args := []uint64{uint64(g.rootID), arg}
	if fn == g.tick {
		args = args[:1]
	}
	_, err = x.callback(fn, args...)
	if err == nil {
		err = x.deliverCalls(g, false)
	}
	if err != nil {
		t.callFailure(err, "root callback")
		t.stats.errors.Add(1)
		t.discard(inst)
		return
	}
	t.put(inst)
}
