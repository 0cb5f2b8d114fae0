package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	pactuator "perigee/policies/actuator"

	"perigee/policies"
	"perigee/runtime/lua"
	"perigee/telemetry"

	"perigee/units"
)

// Options of one simulation.
type Options struct {
	Policy string // the Lua file
	Trace  string // CSV or JSON lines
	Plot   string // SVG output path; empty means no plot
	// Bounds applied to every service; zero Max means 50.
	Min, Max, MaxStep int
	// Warmup is how long a new replica takes to serve; default 5s, and
	// negative means instantly.
	Warmup time.Duration
	// Interval between evaluations; default the trace's step.
	Interval time.Duration
	// Start is the wall-clock time of t=0; default Monday 2025-01-06 00:00 UTC.
	Start time.Time
	// Behavior stabilises every service's decisions; zero is the defaults.
	Behavior pactuator.Behavior
	// AllowErrors makes Run succeed despite evaluation errors and rejected
	// decisions; a replay stopped by limit hits fails regardless.
	AllowErrors bool
}

// LimitStops is how many evaluations in a row may be stopped by the
// deadline or the allocation budget before a replay gives up: a script
// that loops forever would otherwise cost a deadline per tick.
const LimitStops = 3

// Point is one tick of one service, as the summary and the plot read it.
type Point struct {
	T        float64
	RPS      float64 // offered
	Ready    int
	Desired  int
	P99      time.Duration
	Failed   float64
	Shed     float64
	Overload bool
}

// Result is what a simulation produced.
type Result struct {
	Ticks      int
	Step       float64
	Series     map[string][]Point
	Decisions  []telemetry.Decision
	EvalErrors int
	FirstError error // the first evaluation error, with the script's line
}

// rejected counts the decisions that were not applied.
func (r Result) rejected() (n int, first string) {
	for _, d := range r.Decisions {
		if d.Rejected != "" {
			if n == 0 {
				first = fmt.Sprintf("%s %s: %s", d.Action, strings.TrimSpace(d.Service+" "+d.Target), d.Rejected)
			}
			n++
		}
	}
	return n, first
}

// Run replays the trace through the policy, writes the decision timeline
// and a summary to out, and draws the plot when asked.
func Run(ctx context.Context, opt Options, out io.Writer) error {
	res, err := Simulate(ctx, opt, out)
	if err != nil {
		return err
	}
	summarize(out, opt, res)
	if err := writePlot(opt, res, out); err != nil || opt.AllowErrors {
		return err
	}
	n, first := res.rejected()
	switch {
	case res.EvalErrors > 0:
		return fmt.Errorf("sim: %d evaluation errors, the first: %w", res.EvalErrors, res.FirstError)
	case n > 0:
		return fmt.Errorf("sim: %d decisions rejected, the first: %s", n, first)
	}
	return nil
}

func writePlot(opt Options, res Result, out io.Writer) error {
	if opt.Plot != "" {
		f, err := os.Create(opt.Plot)
		if err != nil {
			return fmt.Errorf("sim: plot: %w", err)
		}
		if err := Plot(f, res); err != nil {
			f.Close()
			return fmt.Errorf("sim: plot: %w", err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("sim: plot: %w", err)
		}
		fmt.Fprintf(out, "plot written to %s\n", opt.Plot)
	}
	return nil
}

// Simulate runs the replay and writes the timeline to out as it goes.
func Simulate(ctx context.Context, opt Options, out io.Writer) (Result, error) {
	ticks, err := ReadTrace(opt.Trace)
	if err != nil {
		return Result{}, err
	}
	step := 1.0
	if len(ticks) > 1 {
		step = ticks[1].T - ticks[0].T
	}
	if opt.Start.IsZero() {
		opt.Start = time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC)
	}
	if opt.Max == 0 {
		opt.Max = 50
	}
	if opt.Min == 0 {
		opt.Min = 1
	}
	switch {
	case opt.Warmup == 0:
		opt.Warmup = 5 * time.Second
	case opt.Warmup < 0:
		opt.Warmup = 0
	}
	if opt.Interval == 0 {
		opt.Interval = max(time.Duration(step*float64(time.Second)), policies.MinInterval)
	}
	m := &model{now: opt.Start, warmup: opt.Warmup, services: map[string]*service{}}
	acts := map[string]pactuator.Actuator{}
	bounds := map[string]policies.ServiceBounds{}
	for _, tk := range ticks {
		for _, r := range tk.Rows {
			if _, ok := acts[r.Service]; !ok {
				acts[r.Service] = actuator{m: m, svc: r.Service}
				bounds[r.Service] = policies.ServiceBounds{Min: opt.Min, Max: opt.Max, MaxStep: opt.MaxStep, Behavior: opt.Behavior}
				// Start right-sized for the first demand seen.
				s := m.service(r.Service)
				s.ready = min(max(opt.Min, int(math.Ceil(r.RPS/r.Capacity/0.7))), opt.Max)
			}
		}
	}
	res := Result{Ticks: len(ticks), Step: step, Series: map[string][]Point{}}
	name := strings.TrimSuffix(filepath.Base(opt.Policy), filepath.Ext(opt.Policy))
	eng, err := policies.NewEngine(policies.EngineConfig{
		Node: "sim", Region: "sim",
		Policies: []policies.Spec{{Name: name, Script: opt.Policy, Interval: units.Duration(opt.Interval),
			Timeout: units.Duration(min(opt.Interval, time.Second))}},
		Bounds: bounds, Source: m, Actuators: acts,
		Target: target{m: m, decided: func(d telemetry.Decision) {
			res.Decisions = append(res.Decisions, d)
			fmt.Fprintln(out, timelineLine(opt.Start, d))
		}},
		Now: func() time.Time { return m.now }, SyncScale: true,
		ScriptLog: slog.New(scriptLog{out: out, start: opt.Start, now: func() time.Time { return m.now }}),
	})
	if err != nil {
		return res, fmt.Errorf("sim: %w", err)
	}
	defer func() { _ = eng.Reload() }()
	prev := ticks[0].T - step
	var lastEval time.Time
	stops := 0 // consecutive evaluations stopped by a limit
	for i, tk := range ticks {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		m.now = opt.Start.Add(time.Duration(tk.T * float64(time.Second)))
		for _, r := range tk.Rows {
			m.service(r.Service).advance(m.now, tk.T-prev, r)
		}
		prev = tk.T
		if i == 0 || m.now.Sub(lastEval) >= opt.Interval {
			lastEval = m.now
			if err := eng.Evaluate(ctx, name); err != nil {
				if errors.Is(err, ctx.Err()) && ctx.Err() != nil {
					return res, err
				}
				res.EvalErrors++
				if res.FirstError == nil {
					res.FirstError = err
				}
				fmt.Fprintf(out, "%s  error     %v\n", offset(opt.Start, m.now), err)
				if errors.Is(err, lua.ErrTimeout) || errors.Is(err, lua.ErrAllocation) {
					if stops++; stops == LimitStops {
						return res, fmt.Errorf("sim: stopped after %d consecutive evaluations hit a limit, at %s; the first error: %w",
							LimitStops, offset(opt.Start, m.now), res.FirstError)
					}
				} else {
					stops = 0
				}
			} else {
				stops = 0
			}
		}
		for svc, s := range m.services {
			res.Series[svc] = append(res.Series[svc], Point{
				T: tk.T, RPS: s.row.RPS, Ready: s.ready, Desired: s.ready + len(s.pending),
				P99: s.figures.P99, Failed: s.failed, Shed: s.shedRPS, Overload: s.over,
			})
		}
	}
	return res, nil
}

func offset(start, t time.Time) string {
	d := t.Sub(start)
	return fmt.Sprintf("+%02d:%02d:%04.1f", int(d.Hours()), int(d.Minutes())%60, math.Mod(d.Seconds(), 60))
}

func timelineLine(start time.Time, d telemetry.Decision) string {
	what := d.Service
	if d.Target != "" {
		what = strings.TrimPrefix(what+" "+d.Target, " ")
	}
	outcome := "applied"
	switch {
	case d.Rejected != "":
		outcome = "rejected: " + d.Rejected
	case d.DryRun:
		outcome = "dry run"
	}
	return fmt.Sprintf("%s  %-8s  %-16s %8g  %-9s %s", offset(start, d.Time), d.Action, what, d.Value, outcome, d.Reason)
}

func summarize(out io.Writer, opt Options, res Result) {
	applied, rejected := 0, 0
	for _, d := range res.Decisions {
		if d.Applied {
			applied++
		} else if d.Rejected != "" {
			rejected++
		}
	}
	fmt.Fprintf(out, "\nsummary: %s on %s: %d ticks of %gs, %d decisions (%d applied, %d rejected), %d evaluation errors\n",
		filepath.Base(opt.Policy), filepath.Base(opt.Trace), res.Ticks, res.Step, len(res.Decisions), applied, rejected, res.EvalErrors)
	names := make([]string, 0, len(res.Series))
	for n := range res.Series {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pts := res.Series[n]
		var peak, offered, failed, shed, replicaSec float64
		var p99max time.Duration
		lo, hi, over := math.MaxInt, 0, 0
		for _, p := range pts {
			peak = math.Max(peak, p.RPS)
			offered += p.RPS * res.Step
			failed += p.Failed * res.Step
			shed += p.Shed * res.Step
			replicaSec += float64(p.Ready) * res.Step
			p99max = max(p99max, p.P99)
			lo, hi = min(lo, p.Ready), max(hi, p.Ready)
			if p.Overload {
				over++
			}
		}
		share := func(x float64) float64 {
			if offered == 0 {
				return 0
			}
			return 100 * x / offered
		}
		fmt.Fprintf(out, "  %s: peak %.0f rps; replicas %d..%d (final %d), %.1f replica-hours; p99 max %v; over capacity %d/%d ticks; failed %.2f%%, shed %.2f%%\n",
			n, peak, lo, hi, pts[len(pts)-1].Ready, replicaSec/3600, p99max.Round(time.Millisecond), over, len(pts), share(failed), share(shed))
	}
}

// scriptLog prints what a script logs into the timeline.
type scriptLog struct {
	out   io.Writer
	start time.Time
	now   func() time.Time
}

func (h scriptLog) Enabled(context.Context, slog.Level) bool { return true }
func (h scriptLog) Handle(_ context.Context, r slog.Record) error {
	_, err := fmt.Fprintf(h.out, "%s  log       %s\n", offset(h.start, h.now()), r.Message)
	return err
}
func (h scriptLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h scriptLog) WithGroup(string) slog.Handler      { return h }
