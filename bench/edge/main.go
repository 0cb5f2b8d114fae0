// Command edge runs the same trivial backend alone and behind perigee, Caddy
// and nginx, loads each over HTTP/1.1 (wrk), HTTP/2 (h2load) and HTTP/3 (a
// quic-go load generator in this package), and writes req/s, p50, p99 and
// the ratios to bench/results/edge.txt. Targets are run alternately, round
// after round, and the table reports the median of the rounds.
//
//	make build modules && go run ./bench/edge [-d 10s] [-rounds 3] [-targets perigee,caddy] [-protos h1,h2] [-routes plain,wasm] [-perf]
//
// perigee is loaded on up to three routes (routes.go), as targets perigee,
// perigee/wasm and perigee/lua: plain, one trivial Wasm transform, and a
// gate a Lua policy limits; perigee/wasm and perigee/lua are reported
// against perigee.
//
// Target gostack is the ceiling: this binary run again as a child process
// (gostack.go) serving the backend's handler itself over TLS, through
// net/http's server for HTTP/1.1 and HTTP/2 and quic-go's http3.Server for
// HTTP/3, the stack perigee's listeners are built on. perigee/gostack is
// the share of that ceiling perigee reaches.
//
// With -base BIN it also runs a second perigee binary (for example one built
// from main before a change) as target "base", with the same config, and
// reports perigee/base beside the other ratios.
//
// With -perf it then counts each proxy's syscalls per request under wrk and
// records perigee's CPU profile with perf, into bench/results/edge-perf.txt.
//
// Needs the Debian packages caddy, nginx, wrk and nghttp2-client (h2load),
// and linux-perf for -perf. Everything listens on loopback high ports; every
// child process is stopped on exit, also on error or Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

type options struct {
	dur         time.Duration
	rounds      int
	wrkThreads  int
	wrkConns    int
	h2Conns     int
	h2Streams   int
	h3Conns     int
	h3Streams   int
	size        int
	targets     []string
	protos      []string
	routes      []string
	modules     string
	perigeeBin  string
	baseBin     string
	out         string
	perf        bool
	perfOut     string
	perfSeconds time.Duration
}

var (
	allTargets = []string{"backend", "gostack", "perigee", "base", "caddy", "nginx"}
	allProtos  = []string{"h1", "h2", "h3"}
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == gostackCmd {
		fail(serveGostack(os.Args[2:])) // returns only on error
	}
	var o options
	var targets, protos, routes string
	flag.DurationVar(&o.dur, "d", 10*time.Second, "load duration per target and protocol")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds over all targets; the table reports medians")
	flag.IntVar(&o.wrkThreads, "t", 2, "wrk threads (HTTP/1.1)")
	flag.IntVar(&o.wrkConns, "c", 64, "wrk connections (HTTP/1.1)")
	flag.IntVar(&o.h2Conns, "h2c", 8, "h2load connections (HTTP/2)")
	flag.IntVar(&o.h2Streams, "h2m", 8, "h2load concurrent streams per connection")
	flag.IntVar(&o.h3Conns, "h3c", 8, "HTTP/3 connections")
	flag.IntVar(&o.h3Streams, "h3m", 8, "HTTP/3 concurrent streams per connection")
	flag.IntVar(&o.size, "size", 64, "backend response body bytes")
	flag.StringVar(&targets, "targets", "backend,gostack,perigee,caddy,nginx", "targets to run (base is added by -base)")
	flag.StringVar(&protos, "protos", strings.Join(allProtos, ","), "protocols to run: h1, h2, h3")
	flag.StringVar(&routes, "routes", strings.Join(allRoutes, ","), "perigee's routes to load: plain, wasm (one trivial Wasm transform), lua (a gate a Lua policy limits); other targets serve plain only")
	flag.StringVar(&o.modules, "modules", "modules/build", "where make modules builds the example transforms (wasm needs poweredby.wasm)")
	flag.StringVar(&o.perigeeBin, "perigee", "bin/perigee", "perigee binary (make build)")
	flag.StringVar(&o.baseBin, "base", "", "a second perigee binary to compare with, run as target base")
	flag.StringVar(&o.out, "out", "bench/results/edge.txt", "where to write the table")
	flag.BoolVar(&o.perf, "perf", false, "after the rounds, CPU-profile perigee with perf under HTTP/1.1 load")
	flag.StringVar(&o.perfOut, "perf-out", "bench/results/edge-perf.txt", "where -perf writes the top of the profile")
	flag.DurationVar(&o.perfSeconds, "perf-d", 10*time.Second, "how long -perf records")
	flag.Parse()
	if o.rounds < 1 || o.dur < time.Second || o.perfSeconds < time.Second {
		fail(errors.New("-rounds must be at least 1, and -d and -perf-d at least 1s (wrk counts whole seconds)"))
	}
	if o.baseBin != "" && !slices.Contains(strings.Split(targets, ","), "base") {
		targets += ",base"
	}
	var err error
	if o.targets, err = pick(targets, allTargets); err != nil {
		fail(err)
	}
	if o.protos, err = pick(protos, allProtos); err != nil {
		fail(err)
	}
	if o.routes, err = pick(routes, allRoutes); err != nil {
		fail(err)
	}
	if !slices.Contains(o.routes, "plain") {
		fail(errors.New("-routes must keep plain: the other routes are measured against it"))
	}

	// Ctrl-C or SIGTERM cancels the run; run's deferred cleanup then stops
	// every child before we exit.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o)
	stop()
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench edge:", err)
	os.Exit(1)
}

// pick parses a comma-separated list and checks it against the known
// names, keeping the known order.
func pick(list string, known []string) ([]string, error) {
	names := strings.Split(list, ",")
	for _, n := range names {
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("unknown name %q (known: %s)", n, strings.Join(known, ", "))
		}
	}
	var out []string
	for _, k := range known {
		if slices.Contains(names, k) {
			out = append(out, k)
		}
	}
	return out, nil
}

func run(ctx context.Context, o options) (err error) {
	if err := checkTools(o); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "perigee-bench-edge-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	kids := &children{}
	defer func() {
		if stopErr := kids.stopAll(); stopErr != nil {
			err = errors.Join(err, stopErr)
		} else {
			fmt.Fprintf(os.Stderr, "all %d child processes stopped\n", kids.count())
		}
	}()

	started, err := startTargets(ctx, o, dir, kids)
	if err != nil {
		return err
	}
	runs := plan(o, started)
	if len(runs) == 0 {
		return errors.New("nothing to run: no target serves the chosen protocols")
	}
	for _, r := range runs {
		if err := probe(ctx, r, o.size); err != nil {
			return err
		}
	}

	// The report says how often the lua route's policy ran during the rounds.
	lua := slices.IndexFunc(started, func(t *target) bool { return t.route == "lua" })
	var policyBefore policyStatus
	if lua >= 0 {
		if policyBefore, err = policyRuns(ctx, started[lua]); err != nil {
			return err
		}
	}

	host := header(o)
	fmt.Print(host)
	est := time.Duration(o.rounds*len(runs)) * (o.dur + pause)
	fmt.Printf("%d runs of %s per round, %d rounds: about %s\n", len(runs), o.dur, o.rounds, est.Round(time.Second))
	results := map[runKey][]result{}
	for round := 1; round <= o.rounds; round++ {
		for _, r := range runs {
			if err := sleep(ctx, pause); err != nil {
				return err
			}
			res, err := load(ctx, o, dir, r.target, r.proto)
			if ctx.Err() != nil {
				return ctx.Err() // interrupted: the load's own error is only noise
			}
			if err != nil {
				return fmt.Errorf("round %d, %s over %s: %w", round, r.target.name, r.proto, err)
			}
			fmt.Printf("round %d  %-12s %s  %s\n", round, r.target.name, r.proto, res)
			results[r] = append(results[r], res)
		}
	}

	table := host + "\n" + report(o, runs, results)
	if lua >= 0 {
		after, err := policyRuns(ctx, started[lua])
		if err != nil {
			return err
		}
		table += policyNote(policyBefore, after)
	}
	fmt.Print("\n" + table)
	if err := os.WriteFile(o.out, []byte(table), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	fmt.Println("wrote", o.out)

	if o.perf {
		return profile(ctx, o, dir, started)
	}
	return nil
}

// pause lets the previous run's connections close before the next starts.
const pause = time.Second

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runKey is one cell of the table. target is a pointer into the started
// targets, so it is comparable.
type runKey struct {
	target *target
	proto  string
}

// plan lists the runs of one round: protocols outermost, so the targets
// compared in one row of the table are measured close together in time.
func plan(o options, started []*target) []runKey {
	var runs []runKey
	for _, p := range o.protos {
		for _, t := range started {
			if slices.Contains(t.protos, p) {
				runs = append(runs, runKey{t, p})
			}
		}
	}
	return runs
}
