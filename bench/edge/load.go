package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"perigee/telemetry"
)

// result is one run's figures.
type result struct {
	rps      float64
	p50, p99 time.Duration
	errors   int64   // failed requests and non-2xx answers
	cores    float64 // CPU the target's processes used, in cores
	usPerReq float64 // that CPU per request: what decides req/s once the cores are saturated
}

func (r result) String() string {
	return fmt.Sprintf("%8.0f req/s  p50 %s  p99 %s  errors %d  server %.2f cores, %.0f us/req",
		r.rps, ms(r.p50), ms(r.p99), r.errors, r.cores, r.usPerReq)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

// load runs one protocol's load generator against a target and measures
// the CPU the target used meanwhile. For a proxy that excludes the backend.
func load(ctx context.Context, o options, dir string, t *target, proto string) (result, error) {
	// Every generator stops itself after o.dur; the margin only catches a hang.
	ctx, cancel := context.WithTimeout(ctx, o.dur+30*time.Second)
	defer cancel()
	pgid := t.proc.cmd.Process.Pid
	cpu0, start := groupCPU(pgid), time.Now()
	var r result
	var err error
	switch proto {
	case "h1":
		r, err = wrk(ctx, o, t.url())
	case "h2":
		r, err = h2load(ctx, o, dir, t.url())
	default:
		r, err = h3load(ctx, t.url(), o.h3Conns, o.h3Streams, o.dur)
	}
	r.cores = (groupCPU(pgid) - cpu0).Seconds() / time.Since(start).Seconds()
	if r.rps > 0 {
		r.usPerReq = r.cores * 1e6 / r.rps
	}
	return r, err
}

// groupCPU sums the user and system CPU time of every process in a process
// group (nginx's workers are processes of their own), from /proc.
func groupCPU(pgid int) time.Duration {
	var ticks int64
	for _, f := range groupStats(pgid) {
		ticks += atoi(f[11]) + atoi(f[12]) // utime, stime
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ is 100 on Linux
}

// groupPids lists the processes of a process group.
func groupPids(pgid int) []string {
	var pids []string
	for pid := range groupStats(pgid) {
		pids = append(pids, pid)
	}
	return pids
}

// groupStats reads /proc/PID/stat of every process in a process group,
// keyed by pid: the fields after the command name, which may hold spaces,
// so f[0] is field 3 (state), f[2] the group, f[11] and f[12] utime and
// stime.
func groupStats(pgid int) map[string][]string {
	entries, _ := os.ReadDir("/proc")
	stats := map[string][]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // not a process, or gone
		}
		_, rest, _ := strings.Cut(string(b), ") ")
		if f := strings.Fields(rest); len(f) > 12 && atoi(f[2]) == int64(pgid) {
			stats[e.Name()] = f
		}
	}
	return stats
}

func wrkArgs(o options, url string, dur time.Duration) []string {
	return []string{"-t" + strconv.Itoa(o.wrkThreads), "-c" + strconv.Itoa(o.wrkConns),
		"-d" + strconv.Itoa(int(dur.Seconds())) + "s", "--latency", url}
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+(\S+)$`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// wrk runs wrk --latency and reads req/s, p50 and p99 from its report.
func wrk(ctx context.Context, o options, url string) (result, error) {
	out, err := exec.CommandContext(ctx, "wrk", wrkArgs(o, url, o.dur)...).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	s := string(out)
	m := wrkRPS.FindStringSubmatch(s)
	if m == nil {
		return result{}, fmt.Errorf("wrk: no Requests/sec in its report:\n%s", s)
	}
	var r result
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	for _, m := range wrkPct.FindAllStringSubmatch(s, -1) {
		d, err := time.ParseDuration(m[2]) // wrk writes us, ms, s and m, as Go does
		if err != nil {
			return result{}, fmt.Errorf("wrk: latency %q: %w", m[2], err)
		}
		if m[1] == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if m := wrkSockErr.FindStringSubmatch(s); m != nil {
		for _, n := range m[1:] {
			r.errors += atoi(n)
		}
	}
	if m := wrkNon2xx.FindStringSubmatch(s); m != nil {
		r.errors += atoi(m[1])
	}
	return r, nil
}

var (
	h2RPS  = regexp.MustCompile(`finished in \S+, ([0-9.]+) req/s`)
	h2Reqs = regexp.MustCompile(`requests: .* (\d+) failed, (\d+) errored, (\d+) timeout`)
)

// h2load runs h2load for o.dur. It reports no percentiles, so they come
// from its per-request log, through the same histogram as HTTP/3's.
func h2load(ctx context.Context, o options, dir, url string) (result, error) {
	logPath := filepath.Join(dir, "h2load.log")
	out, err := exec.CommandContext(ctx, "h2load",
		"-c", strconv.Itoa(o.h2Conns), "-m", strconv.Itoa(o.h2Streams),
		"-D", strconv.FormatInt(o.dur.Milliseconds(), 10)+"ms", "--log-file", logPath, url).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("h2load: %w\n%s", err, out)
	}
	s := string(out)
	m := h2RPS.FindStringSubmatch(s)
	if m == nil {
		return result{}, fmt.Errorf("h2load: no req/s in its report:\n%s", s)
	}
	var r result
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := h2Reqs.FindStringSubmatch(s); m != nil {
		r.errors = atoi(m[1]) + atoi(m[2]) + atoi(m[3])
	}

	f, err := os.Open(logPath)
	if err != nil {
		return result{}, fmt.Errorf("h2load log: %w", err)
	}
	defer f.Close()
	var hist telemetry.Histogram
	sc := bufio.NewScanner(f)
	for sc.Scan() { // start µs, status, µs to end of response
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 3 {
			continue
		}
		if status := atoi(cols[1]); status < 200 || status > 299 {
			if status > 0 { // -1 is a failed stream, already counted
				r.errors++
			}
			continue
		}
		hist.Observe(time.Duration(atoi(cols[2])) * time.Microsecond)
	}
	if err := sc.Err(); err != nil {
		return result{}, fmt.Errorf("h2load log: %w", err)
	}
	snap := hist.Snapshot()
	r.p50, r.p99 = snap.Quantile(0.50), snap.Quantile(0.99)
	return r, nil
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	return n
}
