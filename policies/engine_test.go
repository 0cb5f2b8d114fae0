package policies

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"perigee/policies/actuator"
	"perigee/telemetry"

	"perigee/units"
)

// fixedSource returns the snapshot it holds; it leads under term unless
// told not to.
type fixedSource struct {
	mu       sync.Mutex
	snap     Snapshot
	follower bool
	term     uint64
}

func (s *fixedSource) Leadership() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.term, !s.follower
}

func (s *fixedSource) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap
}

func (s *fixedSource) set(svc string, f ServiceFigures) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap.Services == nil {
		s.snap.Services = map[string]ServiceFigures{}
	}
	s.snap.Services[svc] = f
}

// recordingTarget remembers node-local actions and decisions, and can be
// told to fail.
type recordingTarget struct {
	mu      sync.Mutex
	calls   []string
	decided []telemetry.Decision
	fail    error
	routes  map[string]string // route → the service it sends to
}

func (t *recordingTarget) RouteService(r string) (string, bool) {
	svc, ok := t.routes[r]
	return svc, ok
}

func (t *recordingTarget) Decided(d telemetry.Decision) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.decided = append(t.decided, d)
}

func (t *recordingTarget) decisions() []telemetry.Decision {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]telemetry.Decision(nil), t.decided...)
}

func (t *recordingTarget) note(format string, args ...any) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls = append(t.calls, fmt.Sprintf(format, args...))
	return t.fail
}
func (t *recordingTarget) SetWeight(s, b string, w int) error {
	return t.note("weight %s %s %d", s, b, w)
}
func (t *recordingTarget) Eject(s, b string, d time.Duration) error {
	return t.note("eject %s %s %v", s, b, d)
}
func (t *recordingTarget) Restore(s, b string) error { return t.note("restore %s %s", s, b) }
func (t *recordingTarget) SetLimit(r string, rps float64, burst int) error {
	return t.note("limit %s %g %d", r, rps, burst)
}
func (t *recordingTarget) SetShed(r string, f float64) error { return t.note("shed %s %g", r, f) }
func (t *recordingTarget) SetCircuit(s string, c CircuitLimits) error {
	return t.note("circuit %s %d %d %d %d", s, c.MaxRequests, c.MaxPending, c.MaxRetries, c.MaxRequestsPerBackend)
}
func (t *recordingTarget) list() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.calls...)
}

// countingActuator keeps the replica count it is asked for.
type countingActuator struct {
	mu    sync.Mutex
	n     int
	calls []int
	fail  error
}

func (a *countingActuator) Scale(_ context.Context, r actuator.Request) error {
	n := r.Replicas
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, n)
	if a.fail != nil {
		return a.fail
	}
	a.n = n
	return nil
}
func (a *countingActuator) Replicas() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}
func (a *countingActuator) Close(context.Context) error { return nil }
func (a *countingActuator) history() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]int(nil), a.calls...)
}

// unstable turns stabilisation off, for tests of what comes before it.
var unstable = func() actuator.Behavior {
	var zero units.Duration
	free := actuator.Rate{Percent: 1000000, Period: units.Duration(time.Second)}
	return actuator.Behavior{DownWindow: &zero, UpWindow: &zero, Up: free, Down: free}
}()

type rig struct {
	e   *Engine
	src *fixedSource
	tgt *recordingTarget
	act *countingActuator
}

func newRig(t *testing.T, script string, mod func(*EngineConfig)) *rig {
	t.Helper()
	r := &rig{src: &fixedSource{}, tgt: &recordingTarget{}, act: &countingActuator{n: 2}}
	r.src.set("api", ServiceFigures{RPS: 100, P99: 300 * time.Millisecond})
	cfg := EngineConfig{
		Node: "n1", Region: "eu",
		Policies:  []Spec{{Name: "p", Script: "p.lua", Source: script, Interval: units.Duration(100 * time.Millisecond)}},
		Bounds:    map[string]ServiceBounds{"api": {Min: 1, Max: 8, MaxStep: 3, MinWeight: 5, Behavior: unstable}},
		Source:    r.src,
		Target:    r.tgt,
		Actuators: map[string]actuator.Actuator{"api": r.act},
		SyncScale: true,
	}
	if mod != nil {
		mod(&cfg)
	}
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.e = e
	return r
}

// unhurried gives the rig's policy a deadline no loaded machine reaches,
// for a test whose bound is not time: the default is 100 ms.
func unhurried(c *EngineConfig) {
	c.Policies[0].Timeout, c.Policies[0].Interval = units.Duration(20*time.Second), units.Duration(20*time.Second)
}

func (r *rig) eval(t *testing.T) error {
	t.Helper()
	return r.e.Evaluate(context.Background(), "p")
}

func TestSnapshotReachesScriptAndScaleIsApplied(t *testing.T) {
	r := newRig(t, `
function evaluate(m)
  local s = m.services.api
  assert(m.node.name == "n1" and m.node.region == "eu", "node")
  assert(m.region.api.rps == 100, "region falls back to the node view")
  assert(s.replicas.current == 2 and s.replicas.min == 1 and s.replicas.max == 8, "replicas")
  if s.p99_ms > 200 then scale("api", s.replicas.current + 1, "p99 " .. s.p99_ms) end
end`, nil)
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	if got := r.act.Replicas(); got != 3 {
		t.Fatalf("replicas = %d, want 3", got)
	}
	ds := r.e.Decisions(10)
	if len(ds) != 1 || ds[0].Action != "scale" || ds[0].Value != 3 || !ds[0].Applied || ds[0].Reason != "p99 300" || ds[0].Node != "n1" {
		t.Fatalf("decisions = %+v", ds)
	}
}

// m is updated in place between evaluations: services and backends come
// and go, a region from the source gets its own tables, and a script that
// overwrote part of m sees it restored.
func TestSnapshotTablesFollowTheSource(t *testing.T) {
	r := newRig(t, `
function evaluate(m)
  local n = 0
  for name in pairs(m.services) do n = n + 1 end
  local api, web = m.services.api, m.services.web
  state.seen = {n = n, api_rps = api and api.rps, api_backends = api and #api.backends,
    web = web ~= nil, region_rps = m.region.api and m.region.api.rps, mem = m.node.mem_bytes}
  m.services.api = nil -- scripts should not, but the next evaluation must not mind
end`, nil)
	seen := func() map[string]any {
		t.Helper()
		if err := r.eval(t); err != nil {
			t.Fatal(err)
		}
		r.e.mu.Lock()
		p := r.e.policies["p"]
		r.e.mu.Unlock()
		return p.vm.Global("state").(map[string]any)["seen"].(map[string]any)
	}
	backends := []BackendFigures{{Address: "a"}, {Address: "b"}}
	r.src.set("api", ServiceFigures{RPS: 10, Backends: backends})
	r.src.set("web", ServiceFigures{RPS: 5})
	if got := seen(); got["n"] != 2.0 || got["api_rps"] != 10.0 || got["api_backends"] != 2.0 || got["region_rps"] != 10.0 {
		t.Fatalf("first evaluation saw %v", got)
	}
	r.src.mu.Lock()
	delete(r.src.snap.Services, "web")
	r.src.snap.Node.MemBytes = 1 << 30
	r.src.snap.Region = map[string]ServiceFigures{"api": {RPS: 70}}
	r.src.mu.Unlock()
	r.src.set("api", ServiceFigures{RPS: 20, Backends: backends[:1]})
	if got := seen(); got["n"] != 1.0 || got["web"] != false || got["api_rps"] != 20.0 || got["api_backends"] != 1.0 ||
		got["region_rps"] != 70.0 || got["mem"] != float64(1<<30) {
		t.Fatalf("second evaluation saw %v", got)
	}
	r.src.mu.Lock()
	r.src.snap.Region = nil
	r.src.mu.Unlock()
	if got := seen(); got["region_rps"] != 20.0 {
		t.Fatalf("third evaluation saw %v", got)
	}
}

func TestBoundsClampAndRejectionsAreLogged(t *testing.T) {
	r := newRig(t, `
function evaluate(m)
  scale("api", 50, "way up")          -- step limit 3 from 2 gives 5
  weight("api", "b1", 1, "low")       -- raised to min weight 5
  weight("api", "b2", -1)             -- rejected
  eject("api", "b3", 0)               -- rejected
  shed("r", 1.5)                      -- rejected
  limit("r", 100, 0.5)                -- rejected: burst
  scale("other", 2)                   -- no actuator
  limit("r2", 10, 20, "ok")
end`, nil)
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	byKey := map[string]telemetry.Decision{}
	for _, d := range r.e.Decisions(100) {
		byKey[d.Action+" "+d.Service+d.Target] = d
	}
	if d := byKey["scale api"]; d.Value != 5 || !d.Applied || !strings.Contains(d.Reason, "step limited") {
		t.Errorf("scale: %+v", d)
	}
	if d := byKey["weight apib1"]; d.Value != 5 || !d.Applied {
		t.Errorf("weight raised: %+v", d)
	}
	for _, k := range []string{"weight apib2", "eject apib3", "shed r", "limit r", "scale other"} {
		if d := byKey[k]; d.Applied || d.Rejected == "" {
			t.Errorf("%s should be rejected: %+v", k, d)
		}
	}
	want := []string{"weight api b1 5", "limit r2 10 20"}
	if got := r.tgt.list(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("target calls = %v, want %v", got, want)
	}
	// Max bound as well as step: from 5, asking 50 gives 8 (step allows 8).
	r2 := newRig(t, `function evaluate(m) scale("api", 0) end`, nil)
	if err := r2.eval(t); err != nil {
		t.Fatal(err)
	}
	if d := r2.e.Decisions(1)[0]; d.Value != 1 || !strings.Contains(d.Reason, "below min 1") {
		t.Errorf("min clamp: %+v", d)
	}
}

func TestRepeatedDecisionsAreNotReapplied(t *testing.T) {
	r := newRig(t, `function evaluate(m) scale("api", 4) shed("r", 0.2) eject("api", "b", 60) end`, nil)
	for range 3 {
		if err := r.eval(t); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.act.history(); len(got) != 1 || got[0] != 4 {
		t.Errorf("actuator calls = %v, want [4]", got)
	}
	if got := r.tgt.list(); len(got) != 2 {
		t.Errorf("target calls = %v, want one shed and one eject", got)
	}
	if n := len(r.e.Decisions(100)); n != 3 {
		t.Errorf("%d decisions logged, want 3", n)
	}
}

func TestSupersededAndTypeErrors(t *testing.T) {
	r := newRig(t, `function evaluate(m) scale("api", 3) scale("api", 4) end`, nil)
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	ds := r.e.Decisions(10)
	if len(ds) != 2 || !strings.Contains(ds[0].Rejected, "superseded") || ds[1].Value != 4 || !ds[1].Applied {
		t.Fatalf("decisions = %+v", ds)
	}
	bad := newRig(t, `function evaluate(m) scale("api", "many") end`, nil)
	err := bad.eval(t)
	if err == nil || !strings.Contains(err.Error(), "p.lua:1") || !strings.Contains(err.Error(), "must be a number") {
		t.Fatalf("wrong argument type: %v", err)
	}
	if n := len(bad.e.Decisions(10)); n != 0 {
		t.Errorf("failed evaluation recorded %d decisions", n)
	}
}

func TestDryRunRecordsWithoutActing(t *testing.T) {
	r := newRig(t, `function evaluate(m) scale("api", 5) weight("api", "b", 10) end`, func(c *EngineConfig) {
		c.Policies[0].DryRun = true
	})
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	if len(r.act.history()) != 0 || len(r.tgt.list()) != 0 {
		t.Fatalf("dry run acted: %v %v", r.act.history(), r.tgt.list())
	}
	ds := r.e.Decisions(10)
	if len(ds) != 2 || !ds[0].DryRun || ds[0].Applied {
		t.Fatalf("decisions = %+v", ds)
	}
}

func TestOnlyLeaderScales(t *testing.T) {
	r := newRig(t, `function evaluate(m) scale("api", 5) shed("r", 0.1) end`, func(c *EngineConfig) {
		c.Source.(*fixedSource).follower = true
	})
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	if len(r.act.history()) != 0 {
		t.Fatal("a follower called the actuator")
	}
	if got := r.tgt.list(); len(got) != 1 {
		t.Fatalf("node-local action not applied on a follower: %v", got)
	}
	if d := r.e.Decisions(10)[0]; d.Rejected != "not the region leader" {
		t.Fatalf("decision = %+v", d)
	}
}

func TestServicesOutsideThePolicyAreHiddenAndRefused(t *testing.T) {
	r := newRig(t, `
function evaluate(m)
  assert(m.services.web == nil, "web visible")
  assert(m.services.api ~= nil, "api hidden")
  weight("web", "b", 10)
end`, func(c *EngineConfig) { c.Policies[0].Services = []string{"api"} })
	r.src.set("web", ServiceFigures{RPS: 1})
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	if d := r.e.Decisions(1)[0]; !strings.Contains(d.Rejected, "not assigned") {
		t.Fatalf("decision = %+v", d)
	}
}

// A policy assigned some services acts on the routes that send to them,
// and on no other: limit and shed name a route, not a service, and went
// through for any route of the node.
func TestRoutesOfServicesOutsideThePolicyAreRefused(t *testing.T) {
	r := newRig(t, `
function evaluate(m)
  limit("to-api", 10, 5)
  shed("to-web", 0.5)
  limit("to-web", 1, 1)
  shed("nowhere", 0.1)
end`, func(c *EngineConfig) { c.Policies[0].Services = []string{"api"} })
	r.tgt.routes = map[string]string{"to-api": "api", "to-web": "web"}
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	if got := r.tgt.list(); !slices.Equal(got, []string{"limit to-api 10 5"}) {
		t.Errorf("applied %v, want the limit on the api route alone", got)
	}
	rejected := map[string]string{}
	for _, d := range r.e.Decisions(10) {
		rejected[d.Action+" "+d.Target] = d.Rejected
	}
	for action, want := range map[string]string{
		"shed to-web":  "route to-web sends to service web, which is not assigned to this policy",
		"limit to-web": "route to-web sends to service web, which is not assigned to this policy",
		"shed nowhere": `no route "nowhere"`,
	} {
		if rejected[action] != want {
			t.Errorf("%s: rejected %q, want %q", action, rejected[action], want)
		}
	}
}

func TestFailuresKeepPreviousDecisionsAndAreCounted(t *testing.T) {
	r := newRig(t, `
calls = 0
function evaluate(m)
  calls = calls + 1
  if calls == 1 then scale("api", 4) return end
  scale("api", 7)
  while true do end
end`, func(c *EngineConfig) { c.Policies[0].Timeout = units.Duration(30 * time.Millisecond) })
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	err := r.eval(t)
	if err == nil || !strings.Contains(err.Error(), "p.lua:7") {
		t.Fatalf("endless loop: %v", err)
	}
	if got := r.act.Replicas(); got != 4 {
		t.Fatalf("replicas = %d after a failed evaluation, want 4", got)
	}
	st := r.e.Policies()[0]
	if st.Runs != 2 || st.Errors != 1 || st.LimitStops != 1 || !strings.Contains(st.LastError, "deadline") {
		t.Fatalf("status = %+v", st)
	}
}

func TestActuatorAndTargetFailuresAreRecorded(t *testing.T) {
	r := newRig(t, `function evaluate(m) scale("api", 3) shed("r", 0.5) end`, nil)
	r.act.fail = errors.New("quota exceeded")
	r.tgt.fail = errors.New("no such route")
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	for _, d := range r.e.Decisions(10) {
		if d.Applied || d.Rejected == "" {
			t.Errorf("failure not recorded: %+v", d)
		}
	}
	// A failed scale is retried on the next evaluation.
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	if got := r.act.history(); len(got) != 2 {
		t.Fatalf("actuator calls = %v, want a retry", got)
	}
}

func TestNewEngineRefusesBadScripts(t *testing.T) {
	src := &fixedSource{}
	cases := map[string]Spec{
		"syntax":      {Name: "a", Script: "a.lua", Source: "function evaluate(m)\n  if then\nend"},
		"no evaluate": {Name: "b", Script: "b.lua", Source: "x = 1"},
		"missing":     {Name: "c", Script: "/nonexistent/c.lua"},
		"interval":    {Name: "d", Script: "d.lua", Source: "function evaluate() end", Interval: units.Duration(time.Millisecond)},
		"top loop":    {Name: "e", Script: "e.lua", Source: "while true do end", Timeout: units.Duration(20 * time.Millisecond), Interval: units.Duration(time.Second)},
	}
	for name, spec := range cases {
		_, err := NewEngine(EngineConfig{Source: src, Policies: []Spec{spec}})
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if name == "syntax" && !strings.Contains(err.Error(), "a.lua:2") {
			t.Errorf("syntax error lacks file:line: %v", err)
		}
	}
	if _, err := NewEngine(EngineConfig{Source: src, Bounds: map[string]ServiceBounds{"x": {Min: 5, Max: 2}}}); err == nil {
		t.Error("inconsistent bounds accepted")
	}
}

func TestReloadKeepsOldScriptOnErrorAndCarriesStateUnlessRefused(t *testing.T) {
	v1 := `function evaluate(m) state.n = (state.n or 0) + 1; scale("api", 3) end`
	r := newRig(t, v1, nil)
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	spec := r.e.cfg.Policies[0]
	bad := spec
	bad.Source = "function evaluate(m"
	if err := r.e.Reload(bad); err == nil || !strings.Contains(err.Error(), "p.lua:") {
		t.Fatalf("bad reload: %v", err)
	}
	if err := r.eval(t); err != nil {
		t.Fatalf("old script stopped after a bad reload: %v", err)
	}
	persist := spec
	persist.Source = `function evaluate(m) scale("api", 3 + state.n) end`
	if err := r.e.Reload(persist); err != nil {
		t.Fatal(err)
	}
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	if got := r.act.Replicas(); got != 5 {
		t.Fatalf("replicas = %d, want 5 (state.n carried over as 2)", got)
	}
	fresh := spec
	fresh.Source = `persist_state = false
function evaluate(m) scale("api", 1 + (state.n or 0)) end`
	if err := r.e.Reload(fresh); err != nil {
		t.Fatal(err)
	}
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	if got := r.act.Replicas(); got != 2 {
		t.Fatalf("replicas = %d, want 2 (state not carried with persist_state = false)", got)
	}
	if st := r.e.Policies()[0]; st.Runs != 4 || st.Reloaded.IsZero() {
		t.Fatalf("status after reloads = %+v", st)
	}
	if err := r.e.Reload(); err != nil || len(r.e.Policies()) != 0 {
		t.Fatalf("reload to nothing: %v %v", err, r.e.Policies())
	}
}

func TestRunEvaluatesOnIntervalAndScalesAsynchronously(t *testing.T) {
	r := newRig(t, `function evaluate(m) if m.services.api.p99_ms > 200 then scale("api", 6, "slow") end end`, func(c *EngineConfig) {
		c.SyncScale = false
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.e.Run(ctx); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	// The first call is held to the step limit, 3 from 2; a later tick may
	// already have gone on to 6 by the time this loop looks.
	for len(r.act.history()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no scale within 20s; replicas %d", r.act.Replicas())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if first := r.act.history()[0]; first != 5 {
		t.Fatalf("first scale to %d, want 5", first)
	}
	// A policy added by Reload while running starts too.
	spec := r.e.cfg.Policies[0]
	extra := Spec{Name: "q", Script: "q.lua", Source: `function evaluate(m) shed("r", 0.3) end`, Interval: units.Duration(100 * time.Millisecond)}
	if err := r.e.Reload(spec, extra); err != nil {
		t.Fatal(err)
	}
	for len(r.tgt.list()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("reloaded policy never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if seen := r.tgt.decisions(); len(seen) == 0 || seen[0].Action != "scale" {
		t.Fatalf("the target's Decided saw %+v", seen)
	}
}

func TestDecisionLogKeepsNewest(t *testing.T) {
	l := newDecisionLog(3)
	for i := range 5 {
		l.add(telemetry.Decision{Value: float64(i)})
	}
	got := l.last(10)
	if len(got) != 3 || got[0].Value != 2 || got[2].Value != 4 {
		t.Fatalf("last = %+v", got)
	}
	if got := l.last(-1); len(got) != 0 {
		t.Fatalf("last(-1) = %+v", got)
	}
}

// A number no replica count or burst can be fails the evaluation at the
// script's line; it is never converted into some other count.
func TestHugeAndNonFiniteNumbersAreRefusedWithTheLine(t *testing.T) {
	for _, call := range []string{
		`scale("api", 1e19)`, `scale("api", -1e19)`, `scale("api", 1/0)`, `scale("api", 0/0)`,
		`limit("r", 10, 1e19)`, `limit("r", 1/0, 5)`, `weight("api", "b", 1e300)`, `eject("api", "b", 1/0)`,
		`shed("r", 0/0)`, `circuit("api", {max_requests = 1/0})`, `circuit("api", {max_pending = -1e19})`,
		`circuit("api", {max_retries = 0/0})`,
	} {
		r := newRig(t, "function evaluate(m)\n  "+call+"\nend", func(c *EngineConfig) {
			c.Bounds = map[string]ServiceBounds{"api": {}} // no max, no step: nothing clamps
		})
		err := r.eval(t)
		if err == nil || !strings.Contains(err.Error(), "p.lua:2") {
			t.Errorf("%s: err = %v, want a failure naming p.lua:2", call, err)
		}
		if h := r.act.history(); len(h) != 0 {
			t.Errorf("%s: actuator called with %v", call, h)
		}
		if got := r.tgt.list(); len(got) != 0 {
			t.Errorf("%s: target called: %v", call, got)
		}
	}
}

// clock is a settable engine clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func stableRig(t *testing.T, script string, b actuator.Behavior) (*rig, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := newRig(t, script, func(cfg *EngineConfig) {
		cfg.Now = c.now
		cfg.Bounds = map[string]ServiceBounds{"api": {Min: 1, Max: 50, Behavior: b}}
	})
	return r, c
}

// A policy that alternates 50 and 1 every second: the engine goes up at
// the allowed rate and never back down within the scale-down window.
func TestAlternatingDecisionsAreStabilised(t *testing.T) {
	script := `function evaluate(m)
  state.up = not state.up
  scale("api", state.up and 50 or 1)
end`
	count := func(b actuator.Behavior) (applied, down int) {
		r, c := stableRig(t, script, b)
		prev := r.act.Replicas()
		for range 20 {
			if err := r.eval(t); err != nil {
				t.Fatal(err)
			}
			c.add(time.Second)
		}
		for _, n := range r.act.history() {
			if n < prev {
				down++
			}
			prev = n
		}
		return len(r.act.history()), down
	}
	if applied, _ := count(unstable); applied != 20 {
		t.Fatalf("without stabilisation %d of 20 decisions applied; the test needs the flap", applied)
	}
	applied, down := count(actuator.Behavior{})
	if down != 0 || applied > 4 {
		t.Fatalf("with the default behaviour: %d applied, %d of them down", applied, down)
	}
}

// A reload 3 s after a burst does not reset the scale-down window: the
// new script asking for 1 is held until the window has passed.
func TestReloadKeepsTheScaleDownWindow(t *testing.T) {
	r, c := stableRig(t, `function evaluate(m) scale("api", 3) end`, actuator.Behavior{})
	if err := r.eval(t); err != nil || r.act.Replicas() != 3 {
		t.Fatalf("burst: %v, replicas %d", err, r.act.Replicas())
	}
	c.add(3 * time.Second)
	spec := r.e.cfg.Policies[0]
	spec.Source = `function evaluate(m) scale("api", 1) end`
	if err := r.e.Reload(spec); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		c.add(250 * time.Millisecond)
		if err := r.eval(t); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.act.Replicas(); got != 3 {
		t.Fatalf("replicas %d one second after the reload, want 3 held", got)
	}
	c.add(actuator.DefaultDownWindow)
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	if got := r.act.Replicas(); got != 1 {
		t.Fatalf("replicas %d after the window, want 1", got)
	}
}

// A follower's recommendations fill the service's windows too, so a node
// that takes over the lead does not scale down at once on an empty window.
func TestNewLeaderInheritsItsOwnScaleDownWindow(t *testing.T) {
	r, c := stableRig(t, `function evaluate(m) scale("api", state.n or 5) end`, actuator.Behavior{})
	r.src.follower = true
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute)
	r.src.mu.Lock()
	r.src.follower, r.src.term = false, 7
	r.src.mu.Unlock()
	r.e.mu.Lock()
	p := r.e.policies["p"]
	r.e.mu.Unlock()
	p.mu.Lock()
	p.vm.SetGlobal("state", map[string]any{"n": 1.0})
	p.mu.Unlock()
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	for _, n := range r.act.history() {
		if n < 2 {
			t.Fatalf("the new leader scaled down to %d a minute into the window", n)
		}
	}
}

// A state the sandbox will not convert (a shared subtable counts each time
// it appears, past the conversion limit) refuses the reload, rather than
// reaching the new script as nil; the old script keeps running.
func TestReloadRefusesAStateTooLargeToCarry(t *testing.T) {
	v1 := `function evaluate(m)
  local leaf = {}
  for i = 1, 2000 do leaf[i] = i end
  state.wide = {}
  for i = 1, 100 do state.wide[i] = leaf end
  scale("api", 2)
end`
	r := newRig(t, v1, nil)
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	next := r.e.cfg.Policies[0]
	next.Source = `function evaluate(m) scale("api", state.wide and 3 or 1) end`
	if err := r.e.Reload(next); err == nil || !strings.Contains(err.Error(), "state") {
		t.Fatalf("a state past the conversion limit was carried (or dropped) silently: %v", err)
	}
	if err := r.eval(t); err != nil {
		t.Fatalf("old script stopped after the refused reload: %v", err)
	}
	if got := r.act.Replicas(); got != 2 {
		t.Fatalf("replicas = %d, want the old script's 2", got)
	}
}
