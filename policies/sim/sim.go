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
	Capacity float64 // requests/s the serving replicas can take
	Ready    int
	Desired  int
	P99      time.Duration
	Failed   float64 // requests/s
	Faulty   float64 // of Failed, the backend's own errors, which no replica count prevents
	Shed     float64
	Refused  float64 // of Failed, what a circuit breaker refused
	Overload bool
}

// Result is what a simulation produced.
type Result struct {
	Start      time.Time // the wall-clock time of t=0
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
	res := Result{Start: opt.Start, Ticks: len(ticks), Step: step, Series: map[string][]Point{}}
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
				T: tk.T, RPS: s.row.RPS, Capacity: s.capacity, Ready: s.ready, Desired: s.ready + len(s.pending),
				P99: s.figures.P99, Failed: s.failed, Faulty: s.faulty, Shed: s.shedRPS, Refused: s.refused, Overload: s.over,
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

// Figures sum up one service's replay.
type Figures struct {
	PeakRPS          float64
	Low, High, Final int // ready replicas
	ReplicaHours     float64
	P99Max           time.Duration
	OverTicks        int     // ticks with demand above capacity
	Failed           float64 // share of offered requests, percent
	Faulty           float64 // of Failed, the backend's own errors, percent of offered
	Shed             float64 // percent of offered
	Refused          float64 // of Failed, by a circuit breaker, percent of offered
}

// Figures sums up service's series.
func (r Result) Figures(service string) Figures {
	pts := r.Series[service]
	f := Figures{Low: math.MaxInt}
	var offered, failed, faulty, shed, refused, replicaSec float64
	for _, p := range pts {
		f.PeakRPS = math.Max(f.PeakRPS, p.RPS)
		offered += p.RPS * r.Step
		failed += p.Failed * r.Step
		faulty += p.Faulty * r.Step
		shed += p.Shed * r.Step
		refused += p.Refused * r.Step
		replicaSec += float64(p.Ready) * r.Step
		f.P99Max = max(f.P99Max, p.P99)
		f.Low, f.High = min(f.Low, p.Ready), max(f.High, p.Ready)
		if p.Overload {
			f.OverTicks++
		}
	}
	if len(pts) > 0 {
		f.Final = pts[len(pts)-1].Ready
	}
	if offered > 0 {
		f.Failed, f.Faulty, f.Shed, f.Refused = 100*failed/offered, 100*faulty/offered, 100*shed/offered, 100*refused/offered
	}
	f.ReplicaHours = replicaSec / 3600
	return f
}

// DecisionsPerMinute is the decisions recorded per minute of trace.
func (r Result) DecisionsPerMinute() float64 {
	minutes := float64(r.Ticks) * r.Step / 60
	if minutes == 0 {
		return 0
	}
	return float64(len(r.Decisions)) / minutes
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
	fmt.Fprintf(out, "\nsummary: %s on %s: %d ticks of %gs, %d decisions (%d applied, %d rejected; %.3f a minute), %d evaluation errors\n",
		filepath.Base(opt.Policy), filepath.Base(opt.Trace), res.Ticks, res.Step, len(res.Decisions), applied, rejected,
		res.DecisionsPerMinute(), res.EvalErrors)
	names := make([]string, 0, len(res.Series))
	for n := range res.Series {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f := res.Figures(n)
		fmt.Fprintf(out, "  %s: peak %.0f rps; replicas %d..%d (final %d), %.1f replica-hours; p99 max %v; over capacity %d/%d ticks; failed %.2f%% (%.2f%% for want of capacity, %.2f%% the backend's own errors, %.2f%% refused by the circuit breaker), shed %.2f%%\n",
			n, f.PeakRPS, f.Low, f.High, f.Final, f.ReplicaHours, f.P99Max.Round(time.Millisecond), f.OverTicks, len(res.Series[n]),
			f.Failed, f.Failed-f.Faulty-f.Refused, f.Faulty, f.Refused, f.Shed)
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
