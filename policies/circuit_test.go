package policies

import (
	"strings"
	"testing"
)

// A circuit call reaches the target with the thresholds it names and Keep
// for the others, is logged with them, and is not applied again while it
// restates what is in force.
func TestCircuitActionSetsThresholdsAndIsLogged(t *testing.T) {
	r := newRig(t, `
function evaluate(m)
  circuit("api", {max_requests = state.n or 8, max_pending = 2}, "replicas up")
end`, nil)
	for range 2 {
		if err := r.eval(t); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.tgt.list(); len(got) != 1 || got[0] != "circuit api 8 2 -1 -1" {
		t.Fatalf("target calls = %v, want one circuit api 8 2 -1 -1", got)
	}
	ds := r.e.Decisions(10)
	if len(ds) != 1 {
		t.Fatalf("decisions = %+v, want one", ds)
	}
	d := ds[0]
	if d.Action != "circuit" || d.Service != "api" || d.Target != "max_requests=8 max_pending=2" || d.Value != 8 ||
		!d.Applied || d.Reason != "replicas up" || d.Policy != "p" {
		t.Fatalf("decision = %+v", d)
	}
	if got := r.tgt.decisions(); len(got) != 1 || got[0].Action != "circuit" {
		t.Fatalf("the target heard %+v", got)
	}
	// A change is applied; an earlier call in the same evaluation is superseded.
	r2 := newRig(t, `
function evaluate(m)
  circuit("api", {max_requests = 4})
  circuit("api", {max_retries = 0, max_requests_per_backend = 50})
end`, nil)
	if err := r2.eval(t); err != nil {
		t.Fatal(err)
	}
	if got := r2.tgt.list(); len(got) != 1 || got[0] != "circuit api -1 -1 0 50" {
		t.Fatalf("target calls = %v", got)
	}
	if ds := r2.e.Decisions(10); len(ds) != 2 || !strings.Contains(ds[0].Rejected, "superseded") || ds[1].Value != 0 {
		t.Fatalf("decisions = %+v", ds)
	}
}

// What the script gets wrong fails the evaluation at its line, naming what:
// a key no threshold has, a value that is not a number or not finite, a
// table missing or empty.
func TestCircuitActionRefusesUnknownKeysAndWrongTypesWithTheLine(t *testing.T) {
	for call, want := range map[string]string{
		`circuit("api", {max_request = 8})`:                      `unknown threshold "max_request"`,
		`circuit("api", {max_requests = 8, retries = 1})`:        `unknown threshold "retries"`,
		`circuit("api", {max_requests = "8"})`:                   "max_requests must be a number",
		`circuit("api", {max_requests = 1e300})`:                 "max_requests must be a finite number",
		`circuit("api", {max_requests_per_backend = -1/0})`:      "max_requests_per_backend must be a finite number",
		`circuit("api", {})`:                                     "argument 2 must be a table of thresholds",
		`circuit("api", {8})`:                                    "argument 2 must be a table of thresholds",
		`circuit("api", 8)`:                                      "argument 2 must be a table of thresholds",
		`circuit("api")`:                                         "needs 2 arguments",
		`circuit({max_requests = 8}, "api")`:                     "argument 1 must be a non-empty string",
		`circuit("api", {max_requests = {1}})`:                   "max_requests must be a number",
		`circuit("api", {[1] = 3, max_requests = 8})`:            `unknown threshold "1"`,
		`circuit("api", {max_requests = 8, max_pending = 1e10})`: "max_pending must be a finite number within",
	} {
		r := newRig(t, "function evaluate(m)\n  "+call+"\nend", nil)
		err := r.eval(t)
		if err == nil || !strings.Contains(err.Error(), "p.lua:2") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want p.lua:2 and %q", call, err, want)
		}
		if got := r.tgt.list(); len(got) != 0 {
			t.Errorf("%s: target called: %v", call, got)
		}
		if ds := r.e.Decisions(10); len(ds) != 0 {
			t.Errorf("%s: a failed evaluation recorded %+v", call, ds)
		}
	}
}

// A number out of a threshold's range is a decision rejected and logged,
// as a weight out of range is; so are a service outside the policy's and
// a node without a target. A dry run is logged and not applied.
func TestCircuitActionRejectsOutOfRangeThresholds(t *testing.T) {
	for call, want := range map[string]string{
		`circuit("api", {max_requests = 0})`:                    "circuit max_requests must be a whole number in [1, 1048576], got 0",
		`circuit("api", {max_pending = -1})`:                    "circuit max_pending must be a whole number in [0, 1048576], got -1",
		`circuit("api", {max_retries = 2.5})`:                   "circuit max_retries must be a whole number in [0, 1048576], got 2.5",
		`circuit("api", {max_requests_per_backend = 2e6})`:      "circuit max_requests_per_backend must be a whole number in [0, 1048576], got 2e+06",
		`circuit("web", {max_requests = 10})`:                   "service web is not assigned to this policy",
		`circuit("api", {max_requests = 10, max_pending = -3})`: "max_pending",
	} {
		r := newRig(t, "function evaluate(m)\n  "+call+"\nend", func(c *EngineConfig) { c.Policies[0].Services = []string{"api"} })
		if err := r.eval(t); err != nil {
			t.Fatalf("%s: %v", call, err)
		}
		if got := r.tgt.list(); len(got) != 0 {
			t.Errorf("%s: target called: %v", call, got)
		}
		ds := r.e.Decisions(10)
		if len(ds) != 1 || ds[0].Applied || !strings.Contains(ds[0].Rejected, want) {
			t.Errorf("%s: decisions = %+v, want one rejected with %q", call, ds, want)
		}
	}
	none := newRig(t, `function evaluate(m) circuit("api", {max_requests = 10}) end`, func(c *EngineConfig) { c.Target = nil })
	if err := none.eval(t); err != nil {
		t.Fatal(err)
	}
	if ds := none.e.Decisions(1); len(ds) != 1 || !strings.Contains(ds[0].Rejected, "no target") {
		t.Fatalf("without a target: %+v", ds)
	}
	dry := newRig(t, `function evaluate(m) circuit("api", {max_requests = 10}) end`, func(c *EngineConfig) { c.Policies[0].DryRun = true })
	if err := dry.eval(t); err != nil {
		t.Fatal(err)
	}
	if ds := dry.e.Decisions(1); len(ds) != 1 || !ds[0].DryRun || ds[0].Applied || len(dry.tgt.list()) != 0 {
		t.Fatalf("dry run: %+v, target %v", ds, dry.tgt.list())
	}
}

// On lays only the thresholds named over the base.
func TestCircuitLimitsOnKeepsWhatIsNotNamed(t *testing.T) {
	base := CircuitLimits{MaxRequests: 100, MaxPending: 10, MaxRetries: 3, MaxRequestsPerBackend: 0}
	got := CircuitLimits{MaxRequests: 8, MaxPending: Keep, MaxRetries: 0, MaxRequestsPerBackend: Keep}.On(base)
	if want := (CircuitLimits{MaxRequests: 8, MaxPending: 10, MaxRetries: 0, MaxRequestsPerBackend: 0}); got != want {
		t.Fatalf("On = %+v, want %+v", got, want)
	}
	if KeepAll.On(base) != base {
		t.Fatal("KeepAll changed the base")
	}
}
