package wasm

import (
	"context"
	"errors"
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
		case <-t.stopped.Done():
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
	// for its goroutines) until this one is counted among them.
	if !t.Retain() {
		return
	}
	defer t.Release()
	select {
	case t.pending <- struct{}{}:
	default:
		return
	}
	t.refills.Add(1)
	go func() {
		defer t.refills.Done()
		defer func() { <-t.pending }()
		t.rootCall(func(g *proxyGuest) api.Function { return g.queueReady }, uint64(id))
	}()
}

// rootCall runs a root-context callback (with the root id, then arg) on an
// idle instance, outside any request, and answers the HTTP calls it
// dispatched before the instance goes back. Its caller is one of the
// transform's goroutines (refills), which shutdown waits for after closing
// stop, so it holds no reference: releasing the transform ends the wait
// for those calls.
func (t *Transform) rootCall(pick func(*proxyGuest) api.Function, arg uint64) {
	if t.stopped.Err() != nil {
		return
	}
	inst, err := t.acquire(context.Background())
	if errors.Is(err, errShutDown) {
		return
	}
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
	x := &exchange{t: t, inst: inst, pwState: proxyState{id: g.rootID, effective: g.rootID}}
	x.pw = &x.pwState
	args := []uint64{uint64(g.rootID), arg}
	if fn == g.tick {
		args = args[:1]
	}
	_, err = x.callback(fn, args...)
	if err == nil {
		err = x.deliverCalls(g, false)
	}
	if errors.Is(err, errShutDown) {
		t.put(inst) // sound: only the call's answer is lost
		return
	}
	if err != nil {
		t.callFailure(err, "root callback")
		t.stats.errors.Add(1)
		t.discard(inst)
		return
	}
	t.put(inst)
}

// maxPause bounds how long a postponed request waits for the root context
// to resume it: the node's default response_header timeout, so that it
// ends no later than a request a backend keeps waiting.
const maxPause = 30 * time.Second

var errNothingResumes = errors.New("proxy_on_request_headers paused with no body, call or tick to resume it")

// postpone holds a request whose headers paused with nothing of its own to
// resume it (no body, no call). In Envoy the root context may resume it
// from proxy_on_tick, after proxy_set_effective_context (the SDK's
// postpone_requests). The request's context lives in its instance, so the
// request keeps the instance and runs each tick on it, until a tick
// resumes or answers it; resumed is false when the client left first, or
// maxPause (or the request's own deadline) passed. An error is a tick that
// failed.
func (x *exchange) postpone(g *proxyGuest) (resumed bool, err error) {
	if g.tick == nil || x.t.tickPeriod.Load() == 0 {
		return false, errNothingResumes
	}
	ctx, cancel := context.WithTimeout(x.r.Context(), maxPause)
	defer cancel()
	x.pw.resumed = false
	for !x.pw.resumed && x.pw.local == nil {
		period := time.Duration(x.t.tickPeriod.Load())
		if period == 0 {
			return false, errNothingResumes
		}
		tick := time.NewTimer(period)
		select {
		case <-ctx.Done():
			tick.Stop()
			return false, nil
		case <-tick.C:
		}
		if _, err := x.callbackAs(g.rootID, g.tick, uint64(g.rootID)); err != nil {
			return false, err
		}
	}
	return x.pw.resumed, nil
}
