package policies

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"

	"perigee/telemetry"
)

// Value limits that hold whatever the bounds say.
const (
	maxWeight    = 10000
	maxEjectTime = time.Hour
	// maxNumber bounds every number an action takes, so that each converts
	// to an int exactly: a replica count, weight, burst or rate beyond it is
	// a bug in the script, not a decision.
	maxNumber = 1e9
)

// ActionKind names what a script asked for: each is a Lua function of the
// same name, and the Action of the decision it leads to.
type ActionKind string

// The actions a script may call.
const (
	Scale   ActionKind = "scale"   // scale(service, replicas)
	Weight  ActionKind = "weight"  // weight(service, backend, weight)
	Eject   ActionKind = "eject"   // eject(service, backend, seconds)
	Restore ActionKind = "restore" // restore(service, backend)
	Limit   ActionKind = "limit"   // limit(route, rps, burst)
	Shed    ActionKind = "shed"    // shed(route, fraction)
	Circuit ActionKind = "circuit" // circuit(service, {max_requests = n, ...})
)

// arguments is each action's leading strings, then numbers, before an
// optional reason. circuit takes a table instead (parseCircuit).
var arguments = map[ActionKind]struct{ names, nums int }{
	Scale: {1, 1}, Weight: {2, 1}, Eject: {2, 1}, Restore: {2, 0}, Limit: {1, 2}, Shed: {1, 1},
}

// onRoute reports whether the action names a route rather than a service.
func (k ActionKind) onRoute() bool { return k == Limit || k == Shed }

// action is one call a script made.
type action struct {
	kind    ActionKind
	service string  // empty for limit and shed
	target  string  // backend or route; for circuit, the thresholds it names
	value   float64 // replicas, weight, seconds, rps or fraction; for circuit, max_requests if named
	burst   float64
	circuit circuitArgs
	reason  string
	term    uint64 // the leadership term a scale was checked under
}

// parseAction checks a call's argument types. A wrong type, or a number
// that is not finite or beyond maxNumber, is a bug in the script and fails
// the evaluation at its line; a bad value within range is a decision that
// gets rejected and logged.
func parseAction(kind ActionKind, args []any) (action, error) {
	if kind == Circuit {
		return parseCircuit(args)
	}
	a := action{kind: kind}
	names, nums := arguments[kind].names, arguments[kind].nums
	if len(args) < names+nums {
		return a, fmt.Errorf("needs %d arguments, got %d", names+nums, len(args))
	}
	strs := make([]string, names)
	for i := range names {
		s, ok := args[i].(string)
		if !ok || s == "" {
			return a, fmt.Errorf("argument %d must be a non-empty string, got %v", i+1, args[i])
		}
		if err := checkLength(fmt.Sprintf("argument %d", i+1), s); err != nil {
			return a, err
		}
		strs[i] = s
	}
	vals := make([]float64, nums)
	for i := range nums {
		v, ok := args[names+i].(float64)
		if !ok {
			return a, fmt.Errorf("argument %d must be a number, got %v", names+i+1, args[names+i])
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > maxNumber {
			return a, fmt.Errorf("argument %d must be a finite number within ±%g, got %v", names+i+1, float64(maxNumber), v)
		}
		vals[i] = v
	}
	var err error
	if a.reason, err = parseReason(args, names+nums); err != nil {
		return a, err
	}
	switch {
	case kind.onRoute():
		a.target = strs[0]
	case kind == Scale:
		a.service = strs[0]
	default:
		a.service, a.target = strs[0], strs[1]
	}
	if nums > 0 {
		a.value = vals[0]
	}
	if nums > 1 {
		a.burst = vals[1]
	}
	return a, nil
}

// parseReason reads the optional reason at args[i], of every action.
func parseReason(args []any, i int) (string, error) {
	if len(args) <= i || args[i] == nil {
		return "", nil
	}
	reason := fmt.Sprint(args[i])
	if err := checkLength("the reason", reason); err != nil {
		return "", err
	}
	// It goes into an exec's environment (where a NUL fails the run), log
	// lines and a webhook's JSON: one line of text.
	if i := strings.IndexFunc(reason, unicode.IsControl); i >= 0 {
		return "", fmt.Errorf("the reason holds a control character at byte %d", i)
	}
	return reason, nil
}

// key names what an action sets, so that a later action on the same thing
// replaces an earlier one.
func (a action) key() string {
	switch a.kind {
	case Restore:
		return string(Eject) + "|" + a.service + "|" + a.target
	case Circuit:
		return string(Circuit) + "|" + a.service + "|"
	}
	return string(a.kind) + "|" + a.service + "|" + a.target
}

// memo remembers a policy's last outcome for a key.
func (a action) memo() string {
	switch a.kind {
	case Restore:
		return string(Restore)
	case Limit:
		return strconv.FormatFloat(a.value, 'g', -1, 64) + "/" + strconv.FormatFloat(a.burst, 'g', -1, 64)
	case Circuit:
		return a.target
	}
	return strconv.FormatFloat(a.value, 'g', -1, 64)
}

func whole(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && v == math.Trunc(v) }

// apply validates, deduplicates, applies and records the pending actions;
// it returns how many decisions it recorded.
func (p *policy) apply(ctx context.Context, snap Snapshot) int {
	lastIdx := map[string]int{}
	for i, a := range p.pending {
		lastIdx[a.key()] = i
	}
	recorded := 0
	for i, a := range p.pending {
		d := telemetry.Decision{
			Time: snap.Time, Policy: p.spec.Name, Action: string(a.kind), Service: a.service,
			Target: a.target, Value: a.value, Reason: a.reason, DryRun: p.spec.DryRun,
		}
		if lastIdx[a.key()] != i {
			d.Rejected = "superseded by a later call in the same evaluation"
			p.e.record(d)
			recorded++
			continue
		}
		a, note, why := p.check(a, snap.Time)
		d.Value = a.value
		if note != "" {
			d.Reason += " (" + note + ")"
		}
		if why == "" && p.repeat(a, snap.Time) {
			continue
		}
		d.Rejected = why
		if why == "" && !p.spec.DryRun {
			if err := p.act(ctx, a); err != nil {
				d.Rejected = err.Error()
			} else {
				d.Applied = true
			}
		}
		if d.Rejected == "" || why != "" {
			p.remember(a, snap.Time)
		}
		p.e.record(d)
		recorded++
	}
	// A policy that says nothing of a service still wants what it last
	// asked for: that is its recommendation this time, so that a quiet
	// spell keeps the scale-down window filled, as HPA records one per sync.
	for svc, n := range p.asked {
		if _, called := lastIdx[string(Scale)+"|"+svc+"|"]; !called {
			p.e.scalers[svc].stabilize(snap.Time, n)
		}
	}
	if len(p.last) > maxMemos {
		// Forget what this evaluation did not name: at worst a repeat of
		// it is applied and logged once more.
		for k := range p.last {
			if _, named := lastIdx[k]; !named {
				delete(p.last, k)
			}
		}
	}
	p.pending = p.pending[:0]
	return recorded
}

// check validates a against its bounds. It returns the action with its
// value clamped into bounds and a note saying so, or why it is rejected.
func (p *policy) check(a action, now time.Time) (action, string, string) {
	if a.service != "" && p.allow != nil && !p.allow[a.service] {
		return a, "", fmt.Sprintf("service %s is not assigned to this policy", a.service)
	}
	if a.kind.onRoute() && p.allow != nil && p.e.cfg.Target != nil {
		switch svc, ok := p.e.cfg.Target.RouteService(a.target); {
		case !ok:
			return a, "", fmt.Sprintf("no route %q", a.target)
		case !p.allow[svc]:
			return a, "", fmt.Sprintf("route %s sends to service %s, which is not assigned to this policy", a.target, svc)
		}
	}
	b := p.e.cfg.Bounds[a.service]
	switch a.kind {
	case Scale:
		sc := p.e.scalers[a.service]
		switch {
		case sc == nil:
			return a, "", fmt.Sprintf("service %s has no actuator", a.service)
		case !whole(a.value) || a.value < 0:
			return a, "", fmt.Sprintf("replicas must be a whole number ≥ 0, got %v", a.value)
		}
		// Followers feed the stabiliser too, so that a node taking over
		// the lead has the region's windows, not empty ones.
		a, note, _ := clampReplicas(a, b, sc.desiredOr(sc.act.Replicas()))
		p.asked[a.service] = int(a.value)
		n, why := sc.stabilize(now, int(a.value))
		if why != "" {
			a.value = float64(n)
			note = strings.TrimPrefix(note+"; "+why, "; ")
		}
		term, leads := p.e.cfg.Source.Leadership()
		if !leads {
			return a, "", "not the region leader"
		}
		a.term = term
		return a, note, ""
	case Weight:
		if !whole(a.value) || a.value < 0 || a.value > maxWeight {
			return a, "", fmt.Sprintf("weight must be a whole number in [0, %d], got %v", maxWeight, a.value)
		}
		if a.value < float64(b.MinWeight) {
			note := fmt.Sprintf("raised from %v to the minimum weight %d", a.value, b.MinWeight)
			a.value = float64(b.MinWeight)
			return a, note, ""
		}
	case Eject:
		if math.IsNaN(a.value) || a.value <= 0 || a.value > maxEjectTime.Seconds() {
			return a, "", fmt.Sprintf("eject seconds must be in (0, %v], got %v", maxEjectTime.Seconds(), a.value)
		}
	case Limit:
		if math.IsNaN(a.value) || math.IsInf(a.value, 0) || a.value < 0 {
			return a, "", fmt.Sprintf("rps must be a finite number ≥ 0 (0 lifts the limit), got %v", a.value)
		}
		if a.value > 0 && (!whole(a.burst) || a.burst < 1) {
			return a, "", fmt.Sprintf("burst must be a whole number ≥ 1, got %v", a.burst)
		}
	case Shed:
		if math.IsNaN(a.value) || a.value < 0 || a.value > 1 {
			return a, "", fmt.Sprintf("shed fraction must be in [0, 1], got %v", a.value)
		}
	case Circuit:
		if why := a.circuit.check(); why != "" {
			return a, "", why
		}
	}
	if a.kind != Scale && p.e.cfg.Target == nil {
		return a, "", "this node has no target for node-local actions"
	}
	return a, "", ""
}

// clampReplicas keeps a scale within [min, max] and within max_step of
// the replicas already asked for.
func clampReplicas(a action, b ServiceBounds, current int) (action, string, string) {
	want := int(a.value)
	n := want
	var note string
	if b.MaxStep > 0 && current >= 0 {
		if n > current+b.MaxStep {
			n, note = current+b.MaxStep, fmt.Sprintf("step limited to +%d", b.MaxStep)
		} else if n < current-b.MaxStep {
			n, note = current-b.MaxStep, fmt.Sprintf("step limited to -%d", b.MaxStep)
		}
	}
	if n < b.Min {
		n, note = b.Min, fmt.Sprintf("%d below min %d", want, b.Min)
	}
	if b.Max > 0 && n > b.Max {
		n, note = b.Max, fmt.Sprintf("%d above max %d", want, b.Max)
	}
	a.value = float64(n)
	return a, note, ""
}

// repeat reports whether a only restates what this policy already has in
// force, so that a policy setting the same value every tick does not flood
// the log or the actuators.
func (p *policy) repeat(a action, now time.Time) bool {
	if a.kind == Scale && !p.spec.DryRun {
		return p.e.scalers[a.service].settled(int(a.value))
	}
	prev, ok := p.last[a.key()]
	if !ok || prev.memo != a.memo() {
		return false
	}
	return a.kind != Eject || now.Before(prev.until)
}

func (p *policy) remember(a action, now time.Time) {
	m := memo{memo: a.memo()}
	if a.kind == Eject {
		m.until = now.Add(time.Duration(a.value * float64(time.Second)))
	}
	p.last[a.key()] = m
}

// act carries out a validated action.
func (p *policy) act(ctx context.Context, a action) error {
	t := p.e.cfg.Target
	var err error
	switch a.kind {
	case Scale:
		return p.e.scalers[a.service].request(ctx, int(a.value), a.reason, p.spec.Name, a.term)
	case Weight:
		err = t.SetWeight(a.service, a.target, int(a.value))
	case Eject:
		err = t.Eject(a.service, a.target, time.Duration(a.value*float64(time.Second)))
	case Restore:
		err = t.Restore(a.service, a.target)
	case Limit:
		err = t.SetLimit(a.target, a.value, int(a.burst))
	case Shed:
		err = t.SetShed(a.target, a.value)
	case Circuit:
		err = t.SetCircuit(a.service, a.circuit.limits())
	}
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	return nil
}
