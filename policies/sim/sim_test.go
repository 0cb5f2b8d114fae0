package sim

import (
	"bytes"
	"context"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pactuator "perigee/policies/actuator"
	"perigee/units"
)

func shipped(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", pattern))
	if err != nil || len(files) == 0 {
		t.Fatalf("no files match %s: %v", pattern, err)
	}
	return files
}

// defaultPolicy is the one `make run` uses and docs/policies.md recommends
// first.
const defaultPolicy = "queue_depth.lua"

// Every example policy replays every shipped trace without an evaluation
// error, and each produces at least one decision on at least one trace.
// The default policy, on every trace, fails at most 1% of requests for
// want of capacity (a backend's own errors no replica count prevents) and
// makes at most one decision a minute on average.
func TestEveryPolicyReplaysEveryTrace(t *testing.T) {
	traces := shipped(t, "traces/*")
	for _, pol := range shipped(t, "*.lua") {
		decided := 0
		for _, tr := range traces {
			var out bytes.Buffer
			res, err := Simulate(context.Background(), Options{Policy: pol, Trace: tr}, &out)
			if err != nil {
				t.Fatalf("%s on %s: %v", pol, tr, err)
			}
			if res.EvalErrors != 0 {
				t.Errorf("%s on %s: %d evaluation errors:\n%s", pol, tr, res.EvalErrors, out.String())
			}
			decided += len(res.Decisions)
			f := res.Figures("api")
			t.Logf("%-24s %-20s failed %5.2f%% (capacity %5.2f%%), %.2f decisions/min, %5.1f replica-hours",
				filepath.Base(pol), filepath.Base(tr), f.Failed, f.Failed-f.Faulty, res.DecisionsPerMinute(), f.ReplicaHours)
			if filepath.Base(pol) != defaultPolicy {
				continue
			}
			if n, first := res.rejected(); n > 0 {
				t.Errorf("default on %s: %d decisions rejected, the first: %s", tr, n, first)
			}
			if f.Failed-f.Faulty > 1 || res.DecisionsPerMinute() > 1 {
				t.Errorf("default on %s: %.2f%% failed for want of capacity, %.2f decisions a minute; want ≤ 1%% and ≤ 1:\n%s",
					tr, f.Failed-f.Faulty, res.DecisionsPerMinute(), out.String())
			}
		}
		if decided == 0 {
			t.Errorf("%s made no decision on any trace", pol)
		}
	}
}

// The flash sale must make a latency policy add replicas during the spike,
// without overshooting, and give them back after it. The policy caps its
// own steps, so the engine's up rate is lifted here, and its scale-down
// window is a minute, as the trace ends five minutes after the spike.
func TestFlashSaleScalesUpAndBackDown(t *testing.T) {
	var out bytes.Buffer
	minute := units.Duration(time.Minute)
	res, err := Simulate(context.Background(), Options{Policy: "../target_latency.lua", Trace: "../traces/flash_sale.csv",
		Behavior: pactuator.Behavior{DownWindow: &minute, Up: pactuator.Rate{Percent: 100000}}}, &out)
	if err != nil {
		t.Fatal(err)
	}
	pts := res.Series["api"]
	before, peak, after := pts[100].Ready, 0, pts[len(pts)-1].Ready
	for _, p := range pts[120:300] {
		peak = max(peak, p.Ready)
	}
	// Enough for the spike (about 34), not the 50 of an uncapped step.
	if peak < 3*before || peak > 40 || after >= peak {
		t.Fatalf("replicas before %d, peak %d, after %d:\n%s", before, peak, after, out.String())
	}
}

func TestRunPrintsSummaryAndWritesSVG(t *testing.T) {
	plot := filepath.Join(t.TempDir(), "out.svg")
	var out bytes.Buffer
	err := Run(context.Background(), Options{Policy: "../predictive.lua", Trace: "../traces/daily_cycle.jsonl", Plot: plot}, &out)
	if err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{"scale", "summary: predictive.lua on daily_cycle.jsonl: 1440 ticks", "api: peak", "plot written"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	b, err := os.ReadFile(plot)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(b, new(struct{})); err != nil {
		t.Fatalf("plot is not well-formed XML: %v", err)
	}
	if n := bytes.Count(b, []byte("<polyline")); n != 3 {
		t.Fatalf("plot has %d lines, want 3 (load, failed, replicas)", n)
	}
}

func TestBadInputsAreReportedWithPosition(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("ok.lua", "function evaluate(m) end")
	cases := map[string]struct{ policy, trace, want string }{
		"bad number":  {good, write("a.csv", "t,service,rps\n0,api,10\n1,api,lots\n"), "a.csv:3"},
		"no column":   {good, write("b.csv", "t,service\n0,api\n"), `lacks column "rps"`},
		"time back":   {good, write("c.csv", "t,service,rps\n5,api,1\n4,api,1\n"), "goes back"},
		"empty":       {good, write("d.csv", "t,service,rps\n"), "no samples"},
		"json field":  {good, write("e.jsonl", `{"t":0,"service":"api","rps":1}`+"\n"+`{"t":1,"service":"api","rsp":1}`+"\n"), "e.jsonl:2"},
		"json value":  {good, write("f.jsonl", `{"t":0,"service":"api","rps":-1}`+"\n"), "rps must be"},
		"bad policy":  {write("bad.lua", "function evaluate(m)\n  scale(\nend"), write("g.csv", "t,service,rps\n0,api,1\n"), "bad.lua:3"},
		"no trace":    {good, filepath.Join(dir, "missing.csv"), "no such file"},
		"error range": {good, write("h.csv", "t,service,rps,error_rate\n0,api,1,2\n"), "error_rate"},
	}
	for name, c := range cases {
		err := Run(context.Background(), Options{Policy: c.policy, Trace: c.trace}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, c.want)
		}
	}
}

func TestRuntimeErrorsAreCountedNotFatal(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "flaky.lua")
	os.WriteFile(pol, []byte("function evaluate(m)\n  if m.services.api.rps > 100 then error('too busy') end\nend"), 0o644)
	tr := filepath.Join(dir, "t.csv")
	os.WriteFile(tr, []byte("t,service,rps\n0,api,50\n1,api,150\n2,api,150\n3,api,50\n"), 0o644)
	var out bytes.Buffer
	res, err := Simulate(context.Background(), Options{Policy: pol, Trace: tr}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if res.EvalErrors != 2 || !strings.Contains(out.String(), "flaky.lua:2") {
		t.Fatalf("eval errors %d, output:\n%s", res.EvalErrors, out.String())
	}
}

// The simulator takes circuit decisions: the shipped circuit_per_replica.lua
// sets 4 requests per ready replica, the timeline shows the thresholds, and
// on a ramp past the replicas' capacity the breaker refuses requests
// instead of queueing them.
func TestCircuitDecisionsShowAndRefuse(t *testing.T) {
	var out bytes.Buffer
	res, err := Simulate(context.Background(), Options{Policy: "../circuit_per_replica.lua", Trace: "../traces/ramp.csv"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Decisions) != 1 || !res.Decisions[0].Applied || res.Decisions[0].Target != "max_requests=8 max_requests_per_backend=4" {
		t.Fatalf("decisions: %+v", res.Decisions)
	}
	if !strings.Contains(out.String(), "circuit   api max_requests=8 max_requests_per_backend=4") {
		t.Fatalf("timeline:\n%s", out.String())
	}
	if f := res.Figures("api"); f.Refused <= 0 || f.Refused > f.Failed {
		t.Fatalf("refused %.2f%% of %.2f%% failed: the breaker should refuse part of the ramp", f.Refused, f.Failed)
	}
}
