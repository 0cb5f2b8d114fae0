package policies

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"perigee/clip"
	"perigee/files"
	"perigee/lograte"
	"perigee/policies/actuator"
	"perigee/runtime/lua"
	"perigee/telemetry"
)

// EngineConfig assembles an engine.
type EngineConfig struct {
	Node, Region string
	Policies     []Spec
	Bounds       map[string]ServiceBounds
	Source       Source
	Target       Target // nil refuses node-local actions
	Actuators    map[string]actuator.Actuator
	Log          *slog.Logger
	// ScriptLog receives what scripts log() and print(); nil means Log.
	ScriptLog *slog.Logger
	// Now is the clock; nil means time.Now. The simulator passes its own.
	Now func() time.Time
	// SyncScale calls actuators inside the evaluation instead of on a
	// per-service worker, which makes a simulated timeline deterministic.
	SyncScale bool
	// LogSize is how many decisions Decisions can return; default 1000.
	LogSize int
	// AllocBytes is each evaluation's allocation budget; 0 is the VM default.
	AllocBytes uint64
}

// PolicyStatus is what GET /policies shows of one policy.
type PolicyStatus struct {
	Name         string        `json:"name"`
	Script       string        `json:"script"`
	Interval     time.Duration `json:"interval"`
	Services     []string      `json:"services,omitempty"`
	DryRun       bool          `json:"dry_run"`
	Runs         uint64        `json:"runs"`
	Errors       uint64        `json:"errors"`
	LimitStops   uint64        `json:"limit_stops"` // evaluations stopped by the deadline or allocation budget
	Decisions    uint64        `json:"decisions"`
	LastRun      time.Time     `json:"last_run"`
	LastDuration time.Duration `json:"last_duration"`
	LastError    string        `json:"last_error,omitempty"`
	LastErrorAt  time.Time     `json:"last_error_at,omitzero"`
	Reloaded     time.Time     `json:"reloaded,omitzero"`
}

// Engine runs the policies.
type Engine struct {
	cfg     EngineConfig
	log     *slog.Logger
	now     func() time.Time
	journal *decisionLog
	scalers map[string]*scaler
	lines   *lograte.Limit // of decisions in the node's log

	mu       sync.Mutex
	policies map[string]*policy
	order    []string
	runCtx   context.Context // set while Run runs
	wg       sync.WaitGroup
}

// NewEngine compiles every policy and refuses the set if any script fails
// to load, naming file:line.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	if cfg.Source == nil {
		return nil, errors.New("policies: engine needs a Source")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ScriptLog == nil {
		cfg.ScriptLog = cfg.Log
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LogSize <= 0 {
		cfg.LogSize = 1000
	}
	for svc, b := range cfg.Bounds {
		if err := b.Validate(); err != nil {
			return nil, fmt.Errorf("policies: service %s: %w", svc, err)
		}
	}
	e := &Engine{
		cfg: cfg, log: cfg.Log, now: cfg.Now,
		journal:  newDecisionLog(cfg.LogSize),
		scalers:  map[string]*scaler{},
		lines:    lograte.New(decisionLinesPerSecond, time.Second),
		policies: map[string]*policy{},
	}
	for svc, act := range cfg.Actuators {
		e.scalers[svc] = newScaler(e, svc, act, cfg.Bounds[svc].Behavior)
	}
	var errs []error
	for _, spec := range cfg.Policies {
		p, err := e.compile(spec, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := e.policies[p.spec.Name]; dup {
			errs = append(errs, fmt.Errorf("policy %s: defined twice", p.spec.Name))
			continue
		}
		e.policies[p.spec.Name] = p
		e.order = append(e.order, p.spec.Name)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	return e, nil
}

// compile loads spec into a fresh VM. When old is given it starts with
// old's state table, unless the new script sets `persist_state = false`,
// and with old's last recommendations, which it goes on feeding to the
// services' stabilisers.
func (e *Engine) compile(spec Spec, old *policy) (*policy, error) {
	spec, err := spec.normalize()
	if err != nil {
		return nil, err
	}
	src := spec.Source
	if src == "" {
		b, err := readScript(spec.Script)
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", spec.Name, err)
		}
		src = string(b)
	}
	p := newPolicy(e, spec)
	p.vm = lua.New(lua.Options{
		Limits:  lua.Limits{Timeout: spec.Timeout.D(), AllocBytes: e.cfg.AllocBytes},
		Now:     e.now,
		Modules: Library(),
		Print:   p.scriptLog,
	})
	p.view = newLuaView(p.vm, spec, p.allow, e.cfg.Node, e.cfg.Region)
	p.registerActions()
	p.vm.SetGlobal("state", map[string]any{})
	if err := p.vm.Load(context.Background(), spec.Script, src); err != nil {
		p.vm.Close()
		return nil, fmt.Errorf("policy %s: %w", spec.Name, err)
	}
	if !p.vm.HasFunc("evaluate") {
		p.vm.Close()
		return nil, fmt.Errorf("policy %s: %s defines no evaluate(m) function", spec.Name, spec.Script)
	}
	if old != nil {
		old.mu.Lock()
		if p.vm.Global("persist_state") != false {
			st, err := old.vm.GlobalValue("state")
			if err != nil {
				// Carrying nil over would reset the policy's state without a word.
				old.mu.Unlock()
				p.vm.Close()
				return nil, fmt.Errorf("policy %s: its state cannot be carried over the reload: %w", spec.Name, err)
			}
			p.vm.SetGlobal("state", st)
		}
		for svc, n := range old.asked {
			p.asked[svc] = n
		}
		old.mu.Unlock()
	}
	return p, nil
}

// Run evaluates every policy on its interval until ctx ends, and runs the
// scale workers.
func (e *Engine) Run(ctx context.Context) {
	e.mu.Lock()
	e.runCtx = ctx
	for _, s := range e.scalers {
		e.wg.Go(func() { s.run(ctx) })
	}
	for _, name := range e.order {
		e.start(ctx, e.policies[name])
	}
	e.mu.Unlock()
	<-ctx.Done()
	e.wg.Wait()
	e.mu.Lock()
	e.runCtx = nil
	e.mu.Unlock()
}

// start runs p's loop; the caller holds e.mu.
func (e *Engine) start(ctx context.Context, p *policy) {
	ctx, p.stop = context.WithCancel(ctx)
	e.wg.Go(func() {
		t := time.NewTicker(p.spec.Interval.D())
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = p.evaluate(ctx)
			}
		}
	})
}

// Reload replaces the policy set. A spec whose script fails to load keeps
// the running version of that policy (if any) and is reported; policies
// missing from specs stop.
func (e *Engine) Reload(specs ...Spec) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	next := map[string]*policy{}
	var order []string
	for _, spec := range specs {
		if _, dup := next[spec.Name]; dup {
			errs = append(errs, fmt.Errorf("policy %s: defined twice", spec.Name))
			continue
		}
		old := e.policies[spec.Name]
		p, err := e.compile(spec, old)
		if err != nil {
			errs = append(errs, err)
			if old == nil {
				continue
			}
			e.log.Warn("policy reload refused; the previous script keeps running", "policy", spec.Name, "err", err)
			p = old
		} else {
			p.reloaded = e.now()
			if old != nil {
				p.carryCounters(old)
			}
		}
		next[spec.Name] = p
		order = append(order, spec.Name)
	}
	for name, old := range e.policies {
		if next[name] != old {
			old.retire()
		}
	}
	for _, name := range order {
		if p := next[name]; p != e.policies[name] && e.runCtx != nil {
			e.start(e.runCtx, p)
		}
	}
	e.policies, e.order = next, order
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("policies: reload: %w", err)
	}
	return nil
}

// Evaluate runs one evaluation of the named policy now. Run calls it on
// every tick; the simulator calls it on simulated ticks.
func (e *Engine) Evaluate(ctx context.Context, name string) error {
	e.mu.Lock()
	p := e.policies[name]
	e.mu.Unlock()
	if p == nil {
		return fmt.Errorf("policies: no policy %q", name)
	}
	return p.evaluate(ctx)
}

// Policies reports every policy's status, in configuration order.
func (e *Engine) Policies() []PolicyStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]PolicyStatus, 0, len(e.order))
	for _, name := range e.order {
		out = append(out, e.policies[name].status())
	}
	return out
}

// Decisions returns the last n decisions, oldest first.
func (e *Engine) Decisions(n int) []telemetry.Decision { return e.journal.last(n) }

// snapshot takes the source's snapshot and fills in what the engine knows
// better: replica counts from actuators and bounds, and the region view when
// the source has none, which it reports as localRegion.
func (e *Engine) snapshot() (s Snapshot, localRegion bool) {
	s = e.cfg.Source.Snapshot()
	if s.Time.IsZero() {
		s.Time = e.now()
	}
	services := make(map[string]ServiceFigures, len(s.Services))
	for name, f := range s.Services {
		services[name] = e.withReplicas(name, f)
	}
	s.Services = services
	if s.Region == nil {
		s.Region = services
		return s, true
	}
	region := make(map[string]ServiceFigures, len(s.Region))
	for name, f := range s.Region {
		region[name] = e.withReplicas(name, f)
	}
	s.Region = region
	return s, false
}

func (e *Engine) withReplicas(name string, f ServiceFigures) ServiceFigures {
	if f.Replicas != (Replicas{}) {
		return f
	}
	b := e.cfg.Bounds[name]
	f.Replicas.Min, f.Replicas.Max = b.Min, b.Max
	if sc := e.scalers[name]; sc != nil {
		f.Replicas.Current = sc.act.Replicas()
		f.Replicas.Desired = sc.desiredOr(f.Replicas.Current)
	}
	return f
}

// record logs a decision and hands it on.
func (e *Engine) record(d telemetry.Decision) {
	d.Node, d.Region = e.cfg.Node, e.cfg.Region
	d.Rejected = clip.Text(d.Rejected, maxRejected)
	e.journal.add(d)
	if e.cfg.Target != nil {
		e.cfg.Target.Decided(d)
	}
	ok, dropped := e.lines.Allow(e.now())
	if !ok {
		return
	}
	attrs := append([]any{"policy", d.Policy, "action", d.Action, "service", d.Service, "target", d.Target,
		"value", d.Value, "reason", d.Reason, "applied", d.Applied, "dry_run", d.DryRun}, dropped...)
	if d.Rejected != "" {
		e.log.Warn("policy decision not applied", append(attrs, "why", d.Rejected)...)
		return
	}
	e.log.Info("policy decision", attrs...)
}

// readScript reads a policy file up to what the sandbox compiles, so a
// huge file costs no more than the limit to refuse.
func readScript(path string) ([]byte, error) {
	return files.Read(path, lua.DefaultSourceBytes)
}
