package policies

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"perigee/runtime/lua"
)

// policy is one compiled script with its VM and counters.
type policy struct {
	e     *Engine
	spec  Spec
	allow map[string]bool
	stop  context.CancelFunc

	mu      sync.Mutex // guards the VM and the fields below it
	vm      *lua.VM
	view    *luaView // the table m, kept between evaluations
	retired bool
	pending []action
	logged  int             // script log records this evaluation
	last    map[string]memo // what this policy last decided, to skip repeats
	asked   map[string]int  // per service, the replicas this policy last recommended

	statusMu sync.Mutex
	st       PolicyStatus
	reloaded time.Time
}

func newPolicy(e *Engine, spec Spec) *policy {
	p := &policy{e: e, spec: spec, last: map[string]memo{}, asked: map[string]int{}}
	if len(spec.Services) > 0 {
		p.allow = map[string]bool{}
		for _, s := range spec.Services {
			p.allow[s] = true
		}
	}
	p.st = PolicyStatus{Name: spec.Name, Script: spec.Script, Interval: spec.Interval.D(), Services: spec.Services, DryRun: spec.DryRun}
	return p
}

type memo struct {
	memo  string
	until time.Time // when an ejection ends
}

// retire stops the policy's loop and frees its VM once any evaluation in
// progress has finished.
func (p *policy) retire() {
	if p.stop != nil {
		p.stop()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.retired = true
	p.vm.Close()
}

func (p *policy) carryCounters(old *policy) {
	prev := old.status()
	p.statusMu.Lock()
	defer p.statusMu.Unlock()
	p.st.Runs, p.st.Errors, p.st.LimitStops, p.st.Decisions = prev.Runs, prev.Errors, prev.LimitStops, prev.Decisions
}

func (p *policy) status() PolicyStatus {
	p.statusMu.Lock()
	defer p.statusMu.Unlock()
	st := p.st
	st.Reloaded = p.reloaded
	return st
}

// evaluate runs evaluate(m) once and applies what it decided. A failed
// evaluation applies nothing, so the previous decisions stay in force.
func (p *policy) evaluate(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired {
		return nil
	}
	snap, localRegion := p.e.snapshot()
	m := p.view.update(snap, localRegion)
	p.pending = p.pending[:0]
	start := time.Now()
	_, err := p.vm.Call(ctx, "evaluate", m)
	took := time.Since(start)
	p.endScriptLog()

	p.statusMu.Lock()
	p.st.Runs++
	p.st.LastRun, p.st.LastDuration = snap.Time, took
	if err != nil {
		p.st.Errors++
		if errors.Is(err, lua.ErrTimeout) || errors.Is(err, lua.ErrAllocation) {
			p.st.LimitStops++
		}
		p.st.LastError, p.st.LastErrorAt = err.Error(), snap.Time
	}
	p.statusMu.Unlock()
	if err != nil {
		p.pending = p.pending[:0]
		if errors.Is(err, lua.ErrAllocation) {
			// m counts toward the VM's budget with what the script kept in
			// it, and a rebuilt VM cannot empty it: make it anew.
			p.view = newLuaView(p.vm, p.spec, p.allow, p.e.cfg.Node, p.e.cfg.Region)
		}
		if ctx.Err() == nil {
			p.e.log.Error("policy evaluation failed; previous decisions stay in force", "policy", p.spec.Name, "err", err)
		}
		return fmt.Errorf("policy %s: %w", p.spec.Name, err)
	}
	n := p.apply(ctx, snap)
	p.statusMu.Lock()
	p.st.Decisions += uint64(n)
	p.statusMu.Unlock()
	return nil
}

// registerActions installs the functions a script calls.
func (p *policy) registerActions() {
	add := func(kind ActionKind, args []any) ([]any, error) {
		a, err := parseAction(kind, args)
		if err != nil {
			return nil, err
		}
		if len(p.pending) == maxActions {
			return nil, errTooManyActions
		}
		p.pending = append(p.pending, a)
		return nil, nil
	}
	for _, kind := range append(slices.Collect(maps.Keys(arguments)), Circuit) {
		p.vm.Register(string(kind), func(args []any) ([]any, error) { return add(kind, args) })
	}
	p.vm.Register("log", func(args []any) ([]any, error) {
		parts := make([]string, len(args))
		for i, a := range args {
			parts[i] = fmt.Sprint(a)
		}
		p.scriptLog(strings.Join(parts, " "))
		return nil, nil
	})
	p.vm.Register("now", func([]any) ([]any, error) {
		return []any{float64(p.e.now().UnixNano()) / 1e9}, nil
	})
}
