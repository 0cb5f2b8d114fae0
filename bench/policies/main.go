// Command policies measures the policy engine: the cost of one evaluation
// of each example policy over 100 services, and the reaction time from a
// load step to the process actuator being called and the new backend
// registered, with a 250 ms interval. It writes bench/results/policies.txt.
//
//	go run ./bench/policies [-cpuprofile cpu.out] [-memprofile mem.out]
//
// The profiles cover the evaluation-cost part only.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"perigee/bench/machine"
	"perigee/policies"
	"perigee/policies/actuator"
	"perigee/telemetry"

	"perigee/units"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "serve-backend" {
		http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		log.Fatal(http.ListenAndServe(os.Args[2], nil))
	}
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the evaluation-cost runs to `file`")
	memProfile := flag.String("memprofile", "", "write an allocation profile of the evaluation-cost runs to `file`")
	flag.Parse()
	var out io.Writer = os.Stdout
	f, err := os.Create(filepath.Join("bench", "results", "policies.txt"))
	if err != nil {
		log.Fatalf("run from the repository root: %v", err)
	}
	defer f.Close()
	out = io.MultiWriter(os.Stdout, f)
	// The load average says how much of the box other work took, which the
	// wall-clock figures depend on.
	load := machine.LoadAvg()
	fmt.Fprintf(out, "policy benchmarks, %s, %d CPUs (shared), load average at start %s\n\n",
		time.Now().UTC().Format(time.DateOnly), runtime.NumCPU(), load)
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			log.Fatal(err)
		}
	}
	if err := evaluationCost(out); err != nil {
		log.Fatal(err)
	}
	if *cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		pf, err := os.Create(*memProfile)
		if err != nil {
			log.Fatal(err)
		}
		runtime.GC()
		if err := pprof.Lookup("allocs").WriteTo(pf, 0); err != nil {
			log.Fatal(err)
		}
		pf.Close()
	}
	if err := reaction(out); err != nil {
		log.Fatal(err)
	}
}

type hundred struct{ snap policies.Snapshot }

func (h hundred) Snapshot() policies.Snapshot { return h.snap }
func (hundred) Leadership() (uint64, bool)    { return 0, true }

type noTarget struct{}

func (noTarget) SetWeight(string, string, int) error             { return nil }
func (noTarget) Eject(string, string, time.Duration) error       { return nil }
func (noTarget) Restore(string, string) error                    { return nil }
func (noTarget) SetLimit(string, float64, int) error             { return nil }
func (noTarget) SetShed(string, float64) error                   { return nil }
func (noTarget) RouteService(r string) (string, bool)            { return r, true }
func (noTarget) SetCircuit(string, policies.CircuitLimits) error { return nil }
func (noTarget) Decided(telemetry.Decision)                      {}
func (c *counter) Scale(_ context.Context, r actuator.Request) error {
	c.n.Store(int64(r.Replicas))
	return nil
}
func (c *counter) Replicas() int               { return int(c.n.Load()) }
func (c *counter) Close(context.Context) error { return nil }

type counter struct{ n atomic.Int64 }

func evaluationCost(out io.Writer) error {
	snap := policies.Snapshot{Services: map[string]policies.ServiceFigures{}}
	for i := range 100 {
		name := fmt.Sprintf("svc%03d", i)
		f := policies.ServiceFigures{RPS: 100 + float64(i*10), ErrorRate: 0.002, P50: 20 * time.Millisecond,
			P95: 90 * time.Millisecond, P99: time.Duration(150+i*2) * time.Millisecond, EWMA: 30 * time.Millisecond, InFlight: 12, Queued: 3}
		for b := range 4 {
			f.Backends = append(f.Backends, policies.BackendFigures{Address: fmt.Sprintf("10.0.%d.%d:8080", i, b), Healthy: true, Weight: 1, Latency: 25 * time.Millisecond})
		}
		snap.Services[name] = f
	}
	scripts, _ := filepath.Glob(filepath.Join("policies", "*.lua"))
	slices.Sort(scripts)
	// The warm-up fills HPA's 300 s stabilization window, so that histories
	// are as long as they stay in production.
	const interval, warmup, runs = time.Second, 300, 200
	fmt.Fprintf(out, "evaluation cost with 100 services (4 backends each), median of %d evaluations after %d warm-up,\n", runs, warmup)
	fmt.Fprintf(out, "on a simulated clock that advances %v per evaluation (CPU: the evaluating thread's time, without waits for a core):\n", interval)
	for _, s := range scripts {
		acts := map[string]actuator.Actuator{} // fresh, so no policy starts where another left off
		bounds := map[string]policies.ServiceBounds{}
		for name := range snap.Services {
			c := &counter{}
			c.n.Store(3)
			acts[name] = c
			bounds[name] = policies.ServiceBounds{Min: 1, Max: 50}
		}
		clock := time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC)
		e, err := policies.NewEngine(policies.EngineConfig{
			// The deadline is the interval, not the default 200 ms, so that
			// a run descheduled on a busy machine is measured, not failed.
			Policies: []policies.Spec{{Name: "p", Script: s, Interval: units.Duration(interval), Timeout: units.Duration(interval)}},
			Source:   hundred{snap}, Target: noTarget{}, Actuators: acts, SyncScale: true,
			Bounds: bounds,
			Now:    func() time.Time { return clock },
		})
		if err != nil {
			return err
		}
		var took []time.Duration
		var cpu time.Duration
		runtime.LockOSThread() // so that the thread's CPU time is the evaluations'
		for i := range warmup + runs {
			clock = clock.Add(interval)
			if i == warmup {
				cpu = -threadCPU()
			}
			start := time.Now()
			if err := e.Evaluate(context.Background(), "p"); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
			if i >= warmup {
				took = append(took, time.Since(start))
			}
		}
		cpu += threadCPU()
		runtime.UnlockOSThread()
		slices.Sort(took)
		fmt.Fprintf(out, "  %-28s median %8v  p99 %8v  CPU mean %8v\n", filepath.Base(s),
			took[len(took)/2].Round(time.Microsecond), took[len(took)*99/100].Round(time.Microsecond), (cpu / runs).Round(time.Microsecond))
		_ = e.Reload()
	}
	return nil
}

// threadCPU is the CPU time of the calling thread. On a shared machine it
// leaves out the time the thread waited for a core, which the wall-clock
// figures include. The kernel updates it in ticks, so only a sum over many
// evaluations means something.
func threadCPU() time.Duration {
	const rusageThread = 1 // RUSAGE_THREAD, which package syscall does not name
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// stepSource reports a calm service until the step, then a slow one.
type stepSource struct{ slow atomic.Bool }

func (s *stepSource) Snapshot() policies.Snapshot {
	p99 := 50 * time.Millisecond
	if s.slow.Load() {
		p99 = 800 * time.Millisecond
	}
	return policies.Snapshot{Services: map[string]policies.ServiceFigures{"api": {RPS: 500, P99: p99}}}
}

func (s *stepSource) Leadership() (uint64, bool) { return 0, true }

type timedActuator struct {
	actuator.Actuator
	called chan time.Time
}

func (t timedActuator) Scale(ctx context.Context, r actuator.Request) error {
	select {
	case t.called <- time.Now():
	default:
	}
	return t.Actuator.Scale(ctx, r)
}

type timedRegistry struct {
	mu    sync.Mutex
	added chan time.Time
}

func (r *timedRegistry) AddBackend(string, string) error {
	select {
	case r.added <- time.Now():
	default:
	}
	return nil
}
func (r *timedRegistry) RemoveBackend(string, string) error { return nil }

func reaction(out io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	const runs = 5
	fmt.Fprintf(out, "\nreaction from a load step to the process actuator, 250ms interval, %d runs:\n", runs)
	for run := range runs {
		reg := &timedRegistry{added: make(chan time.Time, 8)}
		proc, err := actuator.NewProcess("api", actuator.ProcessSpec{Command: fmt.Sprintf("'%s' serve-backend {addr}", exe), Min: 1, Max: 4}, reg, nil)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := proc.Scale(ctx, actuator.Request{Replicas: 1, Reason: "start"}); err != nil {
			cancel()
			return err
		}
		<-reg.added
		act := timedActuator{Actuator: proc, called: make(chan time.Time, 1)}
		src := &stepSource{}
		e, err := policies.NewEngine(policies.EngineConfig{
			Policies: []policies.Spec{{Name: "latency", Script: "bench.lua", Interval: units.Duration(250 * time.Millisecond),
				Source: `function evaluate(m) local s = m.services.api if s.p99_ms > 200 then scale("api", s.replicas.desired + 1, "slow") end end`}},
			Bounds: map[string]policies.ServiceBounds{"api": {Min: 1, Max: 4}},
			Source: src, Target: noTarget{}, Actuators: map[string]actuator.Actuator{"api": act},
		})
		if err != nil {
			cancel()
			return err
		}
		done := make(chan struct{})
		go func() { e.Run(ctx); close(done) }()
		time.Sleep(time.Duration(100+run*37) * time.Millisecond) // step at varying phases of the interval
		step := time.Now()
		src.slow.Store(true)
		called := <-act.called
		ready := <-reg.added
		fmt.Fprintf(out, "  run %d: actuator called after %v, new backend registered after %v\n", run+1,
			called.Sub(step).Round(time.Millisecond), ready.Sub(step).Round(time.Millisecond))
		cancel()
		<-done
		_ = proc.Close(context.Background())
	}
	return nil
}
