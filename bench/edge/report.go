package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"perigee/bench/machine"
)

var protoNames = map[string]string{"h1": "HTTP/1.1", "h2": "HTTP/2", "h3": "HTTP/3"}

// header describes the host and the tools, for the head of the report.
func header(o options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "perigee edge benchmark, %s, nproc %d, %s, load average at start %s\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), machine.CPUModel(), machine.LoadAvg())
	fmt.Fprintf(&b, "versions: %s; caddy %s; %s; %s; %s\n",
		version(o.perigeeBin, "version"), version("caddy", "version"), version("nginx", "-v"),
		version("wrk", "-v"), version("h2load", "--version"))
	if o.baseBin != "" {
		fmt.Fprintf(&b, "base: %s (%s)\n", o.baseBin, version(o.baseBin, "version"))
	}
	fmt.Fprintf(&b, "backend: perigee sample-backend --size %d (plain HTTP/1.1); servers and load generators share the same cores, on loopback\n", o.size)
	if slices.Contains(o.targets, "perigee") && len(o.routes) > 1 {
		fmt.Fprintf(&b, "perigee's routes: plain /; wasm /wasm/ with one trivial transform (modules/wat's poweredby, which sets x-powered-by); lua /lua/, whose gate a Lua policy limits every 50ms to 1e9 req/s (a refusal would be a 429, counted in errors)\n")
	}
	if slices.Contains(o.targets, "gostack") {
		fmt.Fprintf(&b, "gostack: %s with the sample backend's handler, answering itself over TLS (no proxy): the Go stack's ceiling for perigee\n", gostackVersion())
	}
	return b.String()
}

// version returns the first line a program prints about itself, or why not.
func version(prog string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, prog, args...).CombinedOutput() // wrk -v exits 1
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	line, _, _ = strings.Cut(line, " Copyright") // wrk
	line = strings.TrimPrefix(line, "nginx version: ")
	if line == "" {
		return prog + " (no version)"
	}
	return line
}

// report lays out the medians of the rounds, then perigee's ratios to the
// other proxies and its other routes' to its plain one.
func report(o options, runs []runKey, results map[runKey][]result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "load: HTTP/1.1 wrk %s; HTTP/2 h2load -c%d -m%d -D %s; HTTP/3 h3load (this harness, quic-go) %d conns x %d streams for %s\n",
		strings.Join(wrkArgs(o, "URL", o.dur), " "), o.h2Conns, o.h2Streams, o.dur, o.h3Conns, o.h3Streams, o.dur)
	fmt.Fprintf(&b, "median of %d rounds, targets alternated within each round; load average at end %s\n", o.rounds, machine.LoadAvg())
	fmt.Fprintf(&b, "HTTP/2 and HTTP/3 quantiles are read from perigee/telemetry histograms (within 6.25%%)\n")
	fmt.Fprintf(&b, "cores: CPU used by the target's own processes (not the backend's, not the load generator's); us/req: that CPU per request; errors: all rounds\n\n")
	fmt.Fprintf(&b, "%-12s %-8s %9s %9s %9s %7s %6s %7s  %s\n", "target", "proto", "req/s", "p50", "p99", "errors", "cores", "us/req", "req/s per round")
	med := map[[2]string]result{} // target name, proto
	for _, r := range runs {
		rs := results[r]
		m := median(rs)
		med[[2]string{r.target.name, r.proto}] = m
		var per []string
		for _, x := range rs {
			per = append(per, fmt.Sprintf("%.0f", x.rps))
		}
		fmt.Fprintf(&b, "%-12s %-8s %9.0f %9s %9s %7d %6.2f %7.0f  %s\n",
			r.target.name, protoNames[r.proto], m.rps, ms(m.p50), ms(m.p99), m.errors, m.cores, m.usPerReq, strings.Join(per, " "))
	}

	var pairs [][2]string // {a, b}: a / b
	for _, other := range []string{"gostack", "base", "caddy", "nginx"} {
		pairs = append(pairs, [2]string{"perigee", other})
	}
	for _, r := range o.routes[1:] { // after plain
		pairs = append(pairs, [2]string{"perigee/" + r, "perigee"})
	}
	var ratios []string
	for _, p := range o.protos {
		for _, pair := range pairs {
			a, okA := med[[2]string{pair[0], p}]
			m, okB := med[[2]string{pair[1], p}]
			if okA && okB && m.rps > 0 && m.p99 > 0 && m.usPerReq > 0 {
				ratios = append(ratios, fmt.Sprintf("%-8s %-24s %7.2fx %7.2fx %7.2fx", protoNames[p], pair[0]+" vs "+pair[1],
					a.rps/m.rps, float64(a.p99)/float64(m.p99), a.usPerReq/m.usPerReq))
			}
		}
	}
	if len(ratios) > 0 {
		// On a shared machine us/req moves least: it does not count the time
		// the proxy waited for a core.
		fmt.Fprintf(&b, "\nratios (req/s: higher is better; p99 and CPU us/req: lower is better; vs gostack: the share of Go's own ceiling; perigee/wasm and perigee/lua vs perigee: what a route's transform or policy costs)\n%-8s %-24s %8s %8s %8s\n%s\n",
			"proto", "a vs b", "req/s", "p99", "us/req", strings.Join(ratios, "\n"))
	}
	return b.String()
}

// median takes each figure's median on its own; errors are summed.
func median(rs []result) result {
	pick := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	var m result
	m.rps = pick(func(r result) float64 { return r.rps })
	m.p50 = time.Duration(pick(func(r result) float64 { return float64(r.p50) }))
	m.p99 = time.Duration(pick(func(r result) float64 { return float64(r.p99) }))
	m.cores = pick(func(r result) float64 { return r.cores })
	m.usPerReq = pick(func(r result) float64 { return r.usPerReq })
	for _, r := range rs {
		m.errors += r.errors
	}
	return m
}

// profile runs wrk over HTTP/1.1 against each proxy while perf counts the
// syscalls its processes make, then against perigee while perf records its
// CPU, and writes syscalls per request and the top of the flat and
// cumulative profiles. Go binaries keep frame pointers and symbols, so perf
// names Go functions unaided.
func profile(ctx context.Context, o options, dir string, started []*target) error {
	i := slices.IndexFunc(started, func(t *target) bool { return t.name == "perigee" })
	if i < 0 || !slices.Contains(o.protos, "h1") {
		return fmt.Errorf("-perf needs the perigee target and h1")
	}
	wrkDur := o.perfSeconds + 2*time.Second
	secs := fmt.Sprint(o.perfSeconds.Seconds())
	var b strings.Builder
	fmt.Fprintf(&b, "perf under wrk %s, perf attached for the middle %s\n\n", strings.Join(wrkArgs(o, "URL", wrkDur), " "), o.perfSeconds)

	fmt.Fprintf(&b, "== syscalls per request (perf stat -e raw_syscalls:sys_enter on the proxy's processes)\n")
	for _, t := range started {
		if t.name == "backend" || t.route != "" {
			continue // perigee's other routes share its process; -perf loads plain only
		}
		var out []byte
		rps, err := underLoad(ctx, o, t, wrkDur, func() (err error) {
			out, err = exec.CommandContext(ctx, "perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter",
				"-p", strings.Join(groupPids(t.proc.cmd.Process.Pid), ","), "--", "sleep", secs).CombinedOutput()
			return err
		})
		if err != nil {
			return fmt.Errorf("perf stat on %s: %w\n%s", t.name, err, out)
		}
		n, _, _ := strings.Cut(strings.TrimSpace(string(out)), ",") // CSV: count,unit,event,...
		fmt.Fprintf(&b, "%-8s %7.0f req/s  %5.1f syscalls/req\n", t.name, rps, float64(atoi(n))/o.perfSeconds.Seconds()/rps)
	}

	pg := started[i]
	data := filepath.Join(dir, "perf.data")
	var out []byte
	if _, err := underLoad(ctx, o, pg, wrkDur, func() (err error) {
		out, err = exec.CommandContext(ctx, "perf", "record", "-F", "499", "-g", "-o", data,
			"-p", fmt.Sprint(pg.proc.cmd.Process.Pid), "--", "sleep", secs).CombinedOutput()
		return err
	}); err != nil {
		return fmt.Errorf("perf record: %w\n%s", err, out)
	}
	for _, view := range []struct{ title, mode, limit string }{
		{"perigee self time by symbol", "--no-children", "0.8"},
		{"perigee cumulative (children) time by symbol", "--children", "6"},
	} {
		out, err := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", view.mode,
			"--sort", "symbol", "-g", "none", "--percent-limit", view.limit).Output()
		if err != nil {
			return fmt.Errorf("perf report: %w", err)
		}
		fmt.Fprintf(&b, "\n== %s (>= %s%%)\n", view.title, view.limit)
		for line := range strings.Lines(string(out)) {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				b.WriteString(strings.TrimRight(line, " -\n") + "\n") // drop empty columns
			}
		}
	}
	fmt.Print(b.String())
	if err := os.WriteFile(o.perfOut, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write profile: %w", err)
	}
	fmt.Println("wrote", o.perfOut)
	return nil
}

// underLoad runs wrk against t for wrkDur and, a second in, calls measure,
// which must finish a second before wrk does so that it sees only load.
// It returns wrk's req/s.
func underLoad(ctx context.Context, o options, t *target, wrkDur time.Duration, measure func() error) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, wrkDur+30*time.Second)
	defer cancel()
	var (
		wg     sync.WaitGroup
		res    result
		wrkErr error
	)
	wg.Go(func() {
		o.dur = wrkDur
		res, wrkErr = wrk(ctx, o, t.url())
	})
	err := sleep(ctx, time.Second)
	if err == nil {
		err = measure()
	}
	wg.Wait()
	if err != nil {
		return 0, err
	}
	return res.rps, wrkErr
}
