package wasm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"perigee/lograte"
	"perigee/runtime/wasm/meter"
	"perigee/telemetry"
)

// Transform is one loaded module: its own runtime (so its memory cap holds),
// its compiled code and a bounded pool of ready instances.
//
// A Transform counts its users. Load returns it with one reference, held by
// the caller; each request through a Chain holds one more while it runs.
// Release drops the caller's; the instances are closed once the last request
// is done, which is how a reload lets old requests finish.
type Transform struct {
	spec     Spec
	abi      string // ABIHTTPWasm or ABIProxyWasm
	host     *Host
	fp       [32]byte
	logger   *slog.Logger
	guestLog *guestLog
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	modCfg   wazero.ModuleConfig
	// emptyResponse is set when the guest's handle_response has no
	// instructions: the call is left out, and a request gives its instance
	// back once handle_request has returned.
	emptyResponse bool

	// pool holds the idle instances; its capacity is max_pool. The
	// channel keeps them reachable, so the garbage collector never drops one.
	pool chan *instance
	// made counts the instances alive (idle, in use or being replaced):
	// pool at load, up to max_pool as acquire grows it.
	made atomic.Int64

	// Background root callbacks of proxy-wasm filters: ticks and queue
	// notifications (pending bounds those in flight); stop ends them.
	tickPeriod atomic.Int64
	tickOnce   sync.Once
	pending    chan struct{}
	// stopped ends (stop) when the transform shuts down or fails to load:
	// what runs in the background, a replacement's start included, ends.
	// Its Err is the one record of whether the transform is closed.
	stopped context.Context
	stop    context.CancelFunc

	refs      atomic.Int64
	closeOnce sync.Once
	refills   sync.WaitGroup
	// owed counts the discarded instances not yet replaced. One refill at
	// a time replaces them (the discard that finds none owed starts it),
	// so that starts that keep failing cost a share of one core, not of
	// one core per instance.
	owed     atomic.Int64
	starts   startPacer
	startLog *lograte.Limit

	stats stats
}

// instance is one instantiated guest.
type instance struct {
	mod            api.Module
	handleRequest  api.Function
	handleResponse api.Function
	ctx            *callCtx
	// features the guest enabled in its start function: the starting set
	// for each of its requests.
	features Features
	// proxy is set for proxy-wasm guests.
	proxy *proxyGuest
}

type instanceKey struct{}

// Load compiles spec's module, checks it against the ABI and fills its pool.
// On error nothing is left running.
func (h *Host) Load(ctx context.Context, spec Spec) (*Transform, error) {
	spec, err := spec.withDefaults()
	if err != nil {
		return nil, err
	}
	where := spec.Name
	if spec.Source != "" {
		where = fmt.Sprintf("%s (%s)", spec.Name, spec.Source)
	}
	t := &Transform{
		spec:    spec,
		fp:      spec.fingerprint(),
		host:    h,
		logger:  h.logger.With("transform", spec.Name),
		pool:    make(chan *instance, spec.MaxPool),
		pending: make(chan struct{}, spec.Pool),
	}
	t.stopped, t.stop = context.WithCancel(context.Background())
	t.guestLog = newGuestLog(t.logger)
	t.startLog = lograte.New(startLogBurst, time.Minute)
	t.refs.Store(1)
	t.rt = h.newRuntime(ctx, uint64(spec.Memory))
	if err := t.init(ctx, h); err != nil {
		t.stop()
		t.refills.Wait()
		t.rt.Close(ctx)
		return nil, &LoadError{Transform: spec.Name, Err: fmt.Errorf("transform %s: %w", where, err)}
	}
	return t, nil
}

func (t *Transform) init(ctx context.Context, h *Host) error {
	if err := instantiateHostModules(ctx, t.rt, t); err != nil {
		return err
	}
	compiled, abi, err := h.compileGuest(ctx, t.rt, t.spec.Wasm, t.spec.ABI)
	if err != nil {
		return err
	}
	t.compiled, t.abi = compiled, abi
	if abi == ABIProxyWasm && t.spec.MaxPool > t.spec.Pool {
		// Each instance is a plugin with its own root context, started at
		// load; one made under load would start mid-traffic.
		return errors.New("max_pool: a proxy-wasm filter's pool does not grow; set pool")
	}
	t.emptyResponse = abi == ABIHTTPWasm && meter.EmptyExport(t.spec.Wasm, exportHandleResponse)
	// Clock and randomness only: no arguments, environment, files or
	// sockets. Go reactors start with _initialize, TinyGo commands with
	// _start.
	t.modCfg = wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions("_initialize", "_start").
		WithSysWalltime().
		WithSysNanotime()
	// Counted before they exist: a root callback a start function set off
	// (a tick, a queue notification) waits for one of these rather than
	// growing the pool past what its channel holds.
	t.made.Store(int64(t.spec.Pool))
	return t.fill(ctx)
}

// errInitTimeout is the cause of a load's end at init_timeout.
var errInitTimeout = errors.New("init_timeout")

// fill starts the pool at load, GOMAXPROCS instances at a time and all of
// them within init_timeout: one after the other, each with its own bound, a
// large pool of slow starts held a reload for pool × that bound. The first
// start that fails ends the others.
func (t *Transform) fill(ctx context.Context) error {
	limit := t.spec.InitTimeout.D()
	ctx, cancel := context.WithTimeoutCause(ctx, limit, errInitTimeout)
	defer cancel()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range min(runtime.GOMAXPROCS(0), t.spec.Pool) {
		wg.Go(func() {
			for next.Add(1) <= int64(t.spec.Pool) {
				inst, err := t.instantiate(ctx, limit)
				if err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
				t.pool <- inst
			}
		})
	}
	wg.Wait()
	if first != nil && context.Cause(ctx) == errInitTimeout {
		return fmt.Errorf("%d of the pool's %d instances started within init_timeout %s: %w", len(t.pool), t.spec.Pool, limit, first)
	}
	return first
}

// instantiate makes an instance within timeout: its start functions and
// a proxy-wasm plugin's root lifecycle, which also end with ctx.
func (t *Transform) instantiate(ctx context.Context, timeout time.Duration) (*instance, error) {
	inst := &instance{ctx: newCallCtx()}
	ctx = experimental.WithMemoryAllocator(context.WithValue(ctx, instanceKey{}, inst), memoryAllocator)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// WASI's randomness and output are the instance's own, so that they
	// too stop at its call's deadline (see withDeadline).
	cfg := t.modCfg.
		WithRandSource(guestRand{inst.ctx}).
		WithStdout(output{t.guestLog, slog.LevelInfo, inst.ctx}).
		WithStderr(output{t.guestLog, slog.LevelWarn, inst.ctx})
	mod, err := instantiateModule(ctx, t.rt, t.compiled, cfg)
	if err != nil {
		return nil, fmt.Errorf("instantiate: %w", err)
	}
	inst.mod = mod
	if t.abi == ABIProxyWasm {
		inst.proxy = newProxyGuest(mod)
		inst.ctx.guest = inst.proxy
		if err := t.startProxyGuest(ctx, inst); err != nil {
			mod.Close(ctx)
			return nil, err
		}
		return inst, nil
	}
	inst.handleRequest = mod.ExportedFunction(exportHandleRequest)
	inst.handleResponse = mod.ExportedFunction(exportHandleResponse)
	return inst, nil
}

// mapFailure is what memoryAllocator panics with when it cannot map a
// guest's memory: wazero gives an allocator no way to fail, and one that
// returns no memory makes wazero itself panic.
type mapFailure struct{ err error }

// instantiateModule is rt.InstantiateModule with mapFailure made its error.
// wazero holds no lock while it allocates a memory, and the half-made
// instance is left to the collector, as on its own early errors.
func instantiateModule(ctx context.Context, rt wazero.Runtime, compiled wazero.CompiledModule, cfg wazero.ModuleConfig) (mod api.Module, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(mapFailure)
			if !ok {
				panic(r)
			}
			mod, err = nil, f.err
		}
	}()
	return rt.InstantiateModule(ctx, compiled, cfg)
}

// LoadError is a transform that failed to load, so that the caller can
// point at its place in the config.
type LoadError struct {
	Transform string
	Err       error
}

func (e *LoadError) Error() string { return e.Err.Error() }
func (e *LoadError) Unwrap() error { return e.Err }

// Name is the transform's name from its Spec.
func (t *Transform) Name() string { return t.spec.Name }

// Same reports whether spec would load into a transform identical to t:
// same module, config and limits. A reload keeps such transforms.
func (t *Transform) Same(spec Spec) bool {
	spec, err := spec.withDefaults()
	return err == nil && spec.Name == t.spec.Name && spec.fingerprint() == t.fp
}

// Retain adds a reference; it fails once the transform has been shut down.
func (t *Transform) Retain() bool {
	for {
		n := t.refs.Load()
		if n <= 0 {
			return false
		}
		if t.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release drops a reference; the last one closes the transform's runtime
// and every instance.
func (t *Transform) Release() {
	if t.refs.Add(-1) == 0 {
		t.shutdown()
	}
}

func (t *Transform) shutdown() {
	t.closeOnce.Do(func() {
		t.stop()
		t.refills.Wait()
		if err := t.rt.Close(context.Background()); err != nil {
			t.logger.Warn("close wasm runtime", "err", err)
		}
	})
}

var errBusy = errors.New("no free instance")

// acquire takes an idle instance; with none idle it makes one while fewer
// than max_pool are alive, and otherwise waits for one to come back: both
// within the transform's timeout.
func (t *Transform) acquire(ctx context.Context) (*instance, error) {
	select {
	case inst := <-t.pool:
		return inst, nil
	default:
	}
	deadline := time.Now().Add(t.spec.Timeout.D())
	if inst := t.grow(deadline); inst != nil {
		return inst, nil
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case inst := <-t.pool:
		return inst, nil
	case <-timer.C:
		return nil, errBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.stopped.Done(): // a failed load's or a shutdown's: no instance comes back
		return nil, errShutDown
	}
}

func (t *Transform) put(inst *instance) { t.pool <- inst }

// grow makes one more instance if max_pool allows; the request that asked
// pays for instantiating it, until deadline or for init_timeout, whichever
// ends first, and the pool keeps it, so a client that leaves meanwhile
// does not cut it short. A start function still running then is stopped;
// a start that fails is reported as a replacement's is (startFailed).
//
// While the transform's starts are failing (see startPacer), the pool does
// not grow but for the one start the pacer lets run: the request waits for
// a free instance instead.
func (t *Transform) grow(deadline time.Time) *instance {
	if t.made.Add(1) > int64(t.spec.MaxPool) {
		t.made.Add(-1)
		return nil
	}
	began, bound := time.Now(), min(t.spec.InitTimeout.D(), time.Until(deadline))
	if !t.starts.begin(began, bound) {
		t.made.Add(-1)
		return nil
	}
	inst, err := t.instantiate(context.Background(), bound)
	if err != nil {
		t.made.Add(-1)
		t.startFailed(err, began, bound)
		return nil
	}
	t.starts.succeeded()
	t.stats.grown.Add(1)
	return inst
}

// discard closes a broken instance and replaces it in the background, so
// the pool is back to full without a request paying for instantiation.
func (t *Transform) discard(inst *instance) {
	inst.mod.Close(context.Background())
	if t.owed.Add(1) == 1 {
		t.refills.Add(1)
		go t.refill()
	}
}

// refill replaces the owed instances one after the other, each start when
// the pacer lets it, until none is owed or the transform stops.
func (t *Transform) refill() {
	defer t.refills.Done()
	for t.stopped.Err() == nil {
		if wait := time.Until(t.starts.next()); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-t.stopped.Done():
				timer.Stop()
				return
			}
		}
		began, bound := time.Now(), t.spec.InitTimeout.D()
		if !t.starts.begin(began, bound) {
			continue // a grown instance's start runs: wait for its outcome
		}
		inst, err := t.instantiate(t.stopped, bound)
		if err == nil {
			t.starts.succeeded()
			t.stats.replaced.Add(1)
			t.put(inst)
			if t.owed.Add(-1) == 0 {
				return
			}
			continue
		}
		if t.stopped.Err() != nil {
			return
		}
		t.startFailed(err, began, bound)
	}
}

// startFailed reports a start, growing the pool or replacing an instance,
// that began at began and failed with err within bound: it is counted
// (not as a guest call's trap or timeout: no request's call failed),
// paces the next start, and is logged at startLog's rate.
func (t *Transform) startFailed(err error, began time.Time, bound time.Duration) {
	t.stats.startFailures.Add(1)
	failures, retry := t.starts.failed(time.Since(began))
	if ok, dropped := t.startLog.Allow(time.Now()); ok {
		t.logger.Error("wasm instance failed to start", append([]any{"err", err, "bound", bound,
			"failures_in_a_row", failures, "retry_in", retry}, dropped...)...)
	}
}

// Pacing of a transform's starts while they keep failing.
const (
	startBackoffMin = 10 * time.Millisecond
	startBackoffMax = 5 * time.Second
	// failedStartWaits: after a failed start the next waits at least this
	// many times as long as the failed one ran, so that starts which keep
	// running into init_timeout take at most a tenth of a core.
	failedStartWaits = 9
	// startLogBurst is how many failed starts a minute are logged; the
	// next line says how many were not.
	startLogBurst = 5
)

// startPacer paces the starts of a transform, replacements and growth
// alike, while they keep failing: after each failure one start may run
// once a backoff has passed that doubles from startBackoffMin to
// startBackoffMax, and is at least failedStartWaits times as long as the
// failed start ran. A start that succeeds ends the pacing.
type startPacer struct {
	mu       sync.Mutex
	failures int // in a row
	backoff  time.Duration
	until    time.Time // no start before
}

// begin reports whether a start of at most bound may run at now: any
// while none failed; while they fail, the first once the backoff has
// passed, and no other until that one has ended.
func (p *startPacer) begin(now time.Time, bound time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failures == 0 {
		return true
	}
	if now.Before(p.until) {
		return false
	}
	p.until = now.Add(bound)
	return true
}

func (p *startPacer) failed(ran time.Duration) (failures int, wait time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failures++
	p.backoff = min(max(2*p.backoff, startBackoffMin), startBackoffMax)
	wait = max(p.backoff, failedStartWaits*ran)
	p.until = time.Now().Add(wait)
	return p.failures, wait
}

func (p *startPacer) succeeded() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failures, p.backoff, p.until = 0, 0, time.Time{}
}

// next is when the next start may run.
func (p *startPacer) next() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.until
}

// callFailure classifies a failed guest call for the metrics.
func (t *Transform) callFailure(err error, phase string) {
	var exit *sys.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == sys.ExitCodeDeadlineExceeded {
		t.stats.timeouts.Add(1)
		t.logger.Warn("wasm guest exceeded its deadline", "phase", phase, "timeout", t.spec.Timeout.D())
		return
	}
	t.stats.traps.Add(1)
	t.logger.Warn("wasm guest trapped", "phase", phase, "err", err)
}

// Stats are one transform's cumulative figures.
type Stats struct {
	Calls    uint64 // requests that entered the transform
	Answered uint64 // requests the guest answered itself (deny, redirect)
	Errors   uint64 // requests the transform failed with a 5xx
	Traps    uint64 // guest calls that trapped or broke the ABI
	Timeouts uint64 // guest calls stopped at their deadline
	Busy     uint64 // requests that found no free instance in time
	Replaced uint64 // instances replaced after a trap or timeout
	Grown    uint64 // instances made past pool, under load (max_pool)
	// StartFailures are instance starts that failed or overran
	// init_timeout, growing the pool or replacing a broken instance.
	StartFailures uint64
	// Time is spent inside the guest, per request (both calls).
	Time telemetry.HistogramSnapshot
}

type stats struct {
	calls, answered, errors, traps, timeouts, busy, replaced, grown, startFailures atomic.Uint64
	time                                                                           telemetry.Histogram
}

// Stats returns the transform's figures so far.
func (t *Transform) Stats() Stats {
	s := &t.stats
	return Stats{
		Calls: s.calls.Load(), Answered: s.answered.Load(), Errors: s.errors.Load(),
		Traps: s.traps.Load(), Timeouts: s.timeouts.Load(), Busy: s.busy.Load(),
		Replaced: s.replaced.Load(), Grown: s.grown.Load(), StartFailures: s.startFailures.Load(),
		Time: s.time.Snapshot(),
	}
}
