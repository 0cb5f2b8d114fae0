// Command wasm measures what Wasm transforms add to a request, side by side
// in one run: the same route with no transform, with addheader (one header
// set on the way in), with pwaddheader (the same header set by a proxy-wasm
// filter), and with a chain of three (denylist, rewrite, addheader). A child process, this program again, serves each variant on
// its own loopback listener, the way a node would; this process is the
// client. The variants take turns, request by request for latency and in
// 100ms slices for throughput, so that drifting machine load hits all of
// them alike; the report gives medians over several such rounds. It writes
// bench/results/wasm.txt.
//
//	go run ./bench/wasm [-out bench/results/wasm.txt] [-rounds 7] [-requests 3000] [-load 1s] [-conns 4]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"perigee/bench/machine"
	"perigee/bench/stats"
	"perigee/runtime/wasm"
)

// variants are the routes compared, each a list of transform names.
var variants = []struct {
	name  string
	chain []string
}{
	{"none", nil},
	{"addheader", []string{"tag"}},
	{"pw-addhdr", []string{"pwtag"}},
	{"chain3", []string{"deny", "rewrite", "tag"}},
}

// specs are the transforms the variants use, by module, config and ABI
// (empty detects it).
var specs = []struct {
	name, module string
	config       any
	abi          string
}{
	{"tag", "addheader", "x-edge: fra-1", ""},
	{"pwtag", "pwaddheader", "x-edge: fra-1", wasm.ABIProxyWasm},
	{"rewrite", "rewrite", []any{map[string]any{"from": "/api/v1/", "to": "/v1/"}}, ""},
	{"deny", "denylist", map[string]any{"countries": []any{"KP"}, "networks": []any{"203.0.113.0/24"}}, ""},
}

func main() {
	out := flag.String("out", "bench/results/wasm.txt", "where to write the figures")
	rounds := flag.Int("rounds", 7, "rounds, each measuring every variant once")
	requests := flag.Int("requests", 3000, "sequential requests per variant and round, for latency")
	load := flag.Duration("load", time.Second, "throughput run per variant and round")
	conns := flag.Int("conns", 4, "concurrent connections in the throughput run")
	modules := flag.String("modules", "modules/build", "where the example modules are built")
	serveFlag := flag.Bool("serve", false, "internal: be the serving child")
	flag.Parse()

	if *serveFlag {
		if err := serve(*modules); err != nil {
			fail(err)
		}
		return
	}
	if err := run(*out, *modules, *rounds, *requests, *load, *conns); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/wasm:", err)
	os.Exit(1)
}

// serve is the child: it loads the transforms, serves every variant on its
// own listener, prints "name addr" lines, then serves until stdin closes.
func serve(dir string) error {
	ctx := context.Background()
	host, err := wasm.NewHost(wasm.Options{CacheDir: filepath.Join(os.TempDir(), "perigee-bench-wasm-cache")})
	if err != nil {
		return err
	}
	var loaded []wasm.Spec
	for _, s := range specs {
		bin, err := os.ReadFile(filepath.Join(dir, s.module+".wasm"))
		if err != nil {
			return err
		}
		cfg, err := wasm.EncodeConfig(s.config, ".")
		if err != nil {
			return err
		}
		loaded = append(loaded, wasm.Spec{Name: s.name, Wasm: bin, Config: cfg, Settings: wasm.Settings{ABI: s.abi}})
	}
	set, err := host.LoadSet(ctx, loaded, nil)
	if err != nil {
		return err
	}
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-path", r.URL.Path)
		io.WriteString(w, "ok")
	})
	for _, v := range variants {
		chain, err := set.Chain(v.chain...)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		go http.Serve(ln, chain.Then(backend))
		fmt.Println(v.name, ln.Addr())
	}
	io.Copy(io.Discard, os.Stdin)
	for name, st := range set.Stats() {
		fmt.Printf("  %s: %d calls, %d errors, %d timeouts, %d traps, %d busy\n", name, st.Calls, st.Errors, st.Timeouts, st.Traps, st.Busy)
	}
	return nil
}

// figures are one variant's results in one round.
type figures struct {
	p50, p99 time.Duration
	rps      float64
	cpu      time.Duration // the server's CPU time per request under load
	failed   int64         // requests that did not get the expected answer
}

func run(out, modules string, rounds, requests int, load time.Duration, conns int) error {
	ctx := context.Background()
	loadStart := machine.LoadAvg()
	for _, src := range []string{"modules/addheader", "modules/rewrite", "modules/denylist", "bench/wasm/pwaddheader"} {
		if err := wasm.Build(ctx, src, filepath.Join(modules, filepath.Base(src)+".wasm")); err != nil {
			return err
		}
	}
	srv, err := startServer(modules)
	if err != nil {
		return err
	}
	defer srv.stop()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}}
	results := make([][]figures, len(variants)) // [variant][round]
	for r := range rounds {
		round := make([]figures, len(variants))
		if err := latency(client, srv.addrs, requests, round); err != nil {
			return err
		}
		if err := throughput(client, srv.addrs, srv.pid(), conns, load, r, round); err != nil {
			return err
		}
		for i := range variants {
			results[i] = append(results[i], round[i])
		}
		fmt.Fprintf(os.Stderr, "round %d/%d done\n", r+1, rounds)
	}

	loadEnd := machine.LoadAvg()
	report := format(results, rounds, requests, load, conns, loadStart, loadEnd) + "\ntransforms, as the server counted them:\n" + srv.stop() + "\n"
	fmt.Print(report)
	return os.WriteFile(out, []byte(report), 0o644)
}

// server is the serving child.
type server struct {
	cmd   *exec.Cmd
	stdin io.Closer
	lines *bufio.Scanner
	addrs []string // in variant order
}

// startServer runs this program as the serving child and reads the
// listeners' addresses.
func startServer(modules string) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-serve", "-modules", modules)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout)}
	for _, v := range variants {
		if !s.lines.Scan() {
			s.stop()
			return nil, fmt.Errorf("server child exited before serving %s", v.name)
		}
		name, addr, _ := strings.Cut(s.lines.Text(), " ")
		if name != v.name {
			s.stop()
			return nil, fmt.Errorf("server child said %q, want %s", s.lines.Text(), v.name)
		}
		s.addrs = append(s.addrs, "http://"+addr+"/api/v1/items")
	}
	return s, nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop ends the child and returns what it printed last: each transform's
// counters. Calling it again returns nothing.
func (s *server) stop() string {
	s.stdin.Close()
	var stats []string
	for s.lines.Scan() {
		stats = append(stats, s.lines.Text())
	}
	s.cmd.Wait()
	slices.Sort(stats)
	return strings.Join(stats, "\n")
}

// get sends one request. It reports whether the answer is the expected one:
// 200, with x-edge set by addheader on the routes that run it. A transform
// that fails (a guest over its deadline, say) makes a 500: that request
// counts as failed, not as an error of the benchmark.
func get(client *http.Client, url string, transformed bool) (bool, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("x-perigee-country", "DE")
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, err
	}
	return resp.StatusCode == http.StatusOK && (resp.Header.Get("x-edge") == "fra-1") == transformed, nil
}

// latency sends n requests to each variant, one at a time and taking
// turns, each variant on its own keep-alive connection, so that load
// changing on the machine hits all variants alike. It fills in each
// variant's 50th and 99th percentiles, after a short warm-up.
func latency(client *http.Client, addrs []string, n int, round []figures) error {
	lat := make([][]time.Duration, len(addrs))
	for i := -n / 10; i < n; i++ {
		for v, url := range addrs {
			start := time.Now()
			ok, err := get(client, url, variants[v].chain != nil)
			if err != nil {
				return fmt.Errorf("%s: %w", variants[v].name, err)
			}
			switch {
			case !ok:
				round[v].failed++
			case i >= 0:
				lat[v] = append(lat[v], time.Since(start))
			}
		}
	}
	for v, l := range lat {
		if len(l) == 0 {
			return fmt.Errorf("%s: every request failed", variants[v].name)
		}
		slices.Sort(l)
		round[v].p50, round[v].p99 = l[len(l)/2], l[len(l)*99/100]
	}
	return nil
}

// throughput gives each variant d of conns clients sending flat out, in
// slices of 100ms that take turns, starting with a different variant each
// round. It fills in each variant's requests/s and the server's CPU time
// per request.
func throughput(client *http.Client, addrs []string, server, conns int, d time.Duration, round int, figs []figures) error {
	const slice = 100 * time.Millisecond
	reqs := make([]int64, len(addrs))
	spent := make([]time.Duration, len(addrs))
	cpu := make([]time.Duration, len(addrs))
	for range max(int(d/slice), 1) {
		for k := range addrs {
			v := (k + round) % len(addrs)
			cpu0, err := cpuTime(server)
			if err != nil {
				return err
			}
			start := time.Now()
			n, failed, err := flood(client, addrs[v], variants[v].chain != nil, conns, slice)
			if err != nil {
				return fmt.Errorf("%s: %w", variants[v].name, err)
			}
			figs[v].failed += failed
			spent[v] += time.Since(start)
			cpu1, err := cpuTime(server)
			if err != nil {
				return err
			}
			reqs[v] += n
			cpu[v] += cpu1 - cpu0
		}
	}
	for v := range addrs {
		figs[v].rps = float64(reqs[v]) / spent[v].Seconds()
		figs[v].cpu = cpu[v] / time.Duration(max(reqs[v], 1))
	}
	return nil
}

// flood runs conns clients flat out for d and returns how many requests
// they completed and how many of those failed.
func flood(client *http.Client, url string, transformed bool, conns int, d time.Duration) (done, failed int64, err error) {
	var ndone, nfailed atomic.Int64
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for range conns {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				ok, err := get(client, url, transformed)
				if err != nil {
					errs <- err
					return
				}
				ndone.Add(1)
				if !ok {
					nfailed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return ndone.Load(), nfailed.Load(), <-errs
}

// cpuTime is the user and system time of process pid, all its threads.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses;
	// utime and stime are the 14th and 15th of the line.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	var ticks int64
	for _, s := range f[11:13] {
		t, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += t
	}
	const userHZ = 100 // clock ticks per second on Linux
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// format writes the report: medians over the rounds, then each round.
func format(results [][]figures, rounds, requests int, load time.Duration, conns int, loadStart, loadEnd string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "perigee wasm transforms benchmark\n")
	fmt.Fprintf(&b, "machine: %d CPUs (nproc), %s, %s/%s, %s, %s\n", runtime.NumCPU(), machine.CPUModel(), runtime.GOOS, runtime.GOARCH, runtime.Version(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "load average: %s at start, %s at end\n", loadStart, loadEnd)
	fmt.Fprintf(&b, "method: HTTP/1.1 over loopback to a child process serving each variant on its own listener; backend answers 2 bytes in-process.\n")
	fmt.Fprintf(&b, "  %d rounds. Latency: %d requests per variant and round, one at a time, the variants taking turns request by request.\n", rounds, requests)
	fmt.Fprintf(&b, "  Throughput: %s per variant and round with %d connections, in 100ms slices taking turns; server CPU per request from /proc.\n", load, conns)
	fmt.Fprintf(&b, "  + = variant minus none in the same round; every figure is the median over the rounds; failed (not 200, e.g. a guest\n")
	fmt.Fprintf(&b, "  stopped at its 100ms deadline) is the total, and failed requests are left out of the latencies.\n\n")
	fmt.Fprintf(&b, "%-10s %8s %8s %8s %8s %9s %8s %8s %8s %7s\n", "variant", "p50 us", "p99 us", "+p50 us", "+p99 us", "req/s", "vs none", "cpu us", "+cpu us", "failed")
	none := results[0]
	for i, v := range variants {
		rs := results[i]
		col := func(f func(r int) float64) float64 {
			xs := make([]float64, len(rs))
			for r := range rs {
				xs[r] = f(r)
			}
			return stats.Median(xs)
		}
		var failed int64
		for _, f := range rs {
			failed += f.failed
		}
		fmt.Fprintf(&b, "%-10s %8.1f %8.1f %8.1f %8.1f %9.0f %7.1f%% %8.1f %8.1f %7d\n", v.name,
			col(func(r int) float64 { return us(rs[r].p50) }),
			col(func(r int) float64 { return us(rs[r].p99) }),
			col(func(r int) float64 { return us(rs[r].p50 - none[r].p50) }),
			col(func(r int) float64 { return us(rs[r].p99 - none[r].p99) }),
			col(func(r int) float64 { return rs[r].rps }),
			col(func(r int) float64 { return 100 * (rs[r].rps/none[r].rps - 1) }),
			col(func(r int) float64 { return us(rs[r].cpu) }),
			col(func(r int) float64 { return us(rs[r].cpu - none[r].cpu) }),
			failed)
	}
	// The ABI cost target: what the proxy-wasm filter adds over what the
	// http-wasm transform doing the same adds, each the median over the
	// rounds as in the table.
	added := func(v int, f func(figures) time.Duration) float64 {
		xs := make([]float64, rounds)
		for r := range rounds {
			xs[r] = us(f(results[v][r]) - f(none[r]))
		}
		return stats.Median(xs)
	}
	p50 := func(f figures) time.Duration { return f.p50 }
	cpu := func(f figures) time.Duration { return f.cpu }
	fmt.Fprintf(&b, "\n%s/%s, of what each adds: p50 %.2fx, cpu %.2fx\n", variants[2].name, variants[1].name,
		added(2, p50)/added(1, p50), added(2, cpu)/added(1, cpu))
	fmt.Fprintf(&b, "\nper round (p50 us / p99 us / req/s / cpu us):\n")
	for r := range rounds {
		fmt.Fprintf(&b, "  round %d:", r+1)
		for i, v := range variants {
			f := results[i][r]
			fmt.Fprintf(&b, "  %s %.1f / %.1f / %.0f / %.1f", v.name, us(f.p50), us(f.p99), f.rps, us(f.cpu))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
