// Command h1client compares httputil.ReverseProxy over net/http.Transport
// with the same proxy over edge/h1client, in one process on loopback.
//
// One backend, two proxies in front of it, and a load generator of -c
// keep-alive HTTP/1.1 clients. Rounds alternate direct (clients to the
// backend), std and h1client; the report gives medians of req/s and of
// process CPU per request (getrusage). Client and backend CPU is the same
// for every proxied target, so target minus direct is the proxy's own cost.
//
//	go run ./bench/h1client [-c 64] [-d 3s] [-rounds 5] [-cpuprofile FILE]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"perigee/bench/machine"
	"perigee/bench/stats"
	"perigee/edge/h1client"
)

func main() {
	clients := flag.Int("c", 64, "concurrent keep-alive clients")
	dur := flag.Duration("d", 3*time.Second, "length of a round")
	rounds := flag.Int("rounds", 5, "rounds per target")
	out := flag.String("out", "bench/results/h1client.txt", "report file")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	flag.Parse()
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}

	backend := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 64))
	}))
	std := &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 512, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	h1 := h1client.New(h1client.Options{ConnectTimeout: time.Second, ResponseHeaderTimeout: 30 * time.Second, MaxIdlePerHost: 512}, std)
	targets := []struct {
		name, addr string
	}{
		{"direct", backend},
		{"std", serve(proxy(backend, std))},
		{"h1client", serve(proxy(backend, h1))},
	}

	start := time.Now()
	loadStart := machine.LoadAvg()
	for _, t := range targets { // warm up pools and code paths
		round(t.addr, *clients, time.Second)
	}
	reqs := map[string][]float64{}
	cpu := map[string][]float64{}
	for range *rounds {
		for _, t := range targets {
			n, elapsed, cpuUsed := round(t.addr, *clients, *dur)
			reqs[t.name] = append(reqs[t.name], float64(n)/elapsed.Seconds())
			cpu[t.name] = append(cpu[t.name], float64(cpuUsed.Microseconds())/float64(n))
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "h1client benchmark, %s, nproc %d, GOMAXPROCS %d, %s\n",
		start.UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Fprintf(&b, "command: go run ./bench/h1client -c %d -d %v -rounds %d\n", *clients, *dur, *rounds)
	fmt.Fprintf(&b, "load average at start %s, at end %s\n", loadStart, machine.LoadAvg())
	fmt.Fprintf(&b, "one process: backend (64-byte body), httputil.ReverseProxy over each transport, %d keep-alive HTTP/1.1 clients, loopback\n", *clients)
	fmt.Fprintf(&b, "medians of %d alternating rounds; CPU is the whole process's (clients + proxy + backend), proxy = target - direct\n\n", *rounds)
	fmt.Fprintf(&b, "%-9s %9s %12s %14s   %s\n", "target", "req/s", "CPU us/req", "proxy us/req", "req/s per round")
	base := stats.Median(cpu["direct"])
	for _, t := range targets {
		proxyCPU := "-"
		if t.name != "direct" {
			proxyCPU = fmt.Sprintf("%.1f", stats.Median(cpu[t.name])-base)
		}
		fmt.Fprintf(&b, "%-9s %9.0f %12.1f %14s   %s\n", t.name, stats.Median(reqs[t.name]), stats.Median(cpu[t.name]), proxyCPU, stats.Join("%.0f", reqs[t.name]))
	}
	fmt.Fprintf(&b, "\nh1client / std: req/s %.2fx, proxy CPU per request %.2fx\n",
		stats.Median(reqs["h1client"])/stats.Median(reqs["std"]),
		(stats.Median(cpu["h1client"])-base)/(stats.Median(cpu["std"])-base))
	fmt.Print(b.String())
	if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}

// serve runs h on a loopback listener and returns its address.
func serve(h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, h)
	return ln.Addr().String()
}

func proxy(backend string, transport http.RoundTripper) http.Handler {
	u := &url.URL{Scheme: "http", Host: backend}
	return &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		Transport: transport,
	}
}

// round drives addr with n clients for d and returns the requests done, the
// time taken and the process CPU used.
func round(addr string, n int, d time.Duration) (int64, time.Duration, time.Duration) {
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			log.Fatal(err)
		}
		conns[i] = c
	}
	var stop atomic.Bool
	var total atomic.Int64
	var wg sync.WaitGroup
	cpu0, t0 := machine.SelfCPU(), time.Now()
	for _, c := range conns {
		wg.Go(func() { total.Add(client(c, &stop)) })
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	elapsed, cpuUsed := time.Since(t0), machine.SelfCPU()-cpu0
	for _, c := range conns {
		c.Close()
	}
	return total.Load(), elapsed, cpuUsed
}

const request = "GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: h1bench\r\n\r\n"

// client sends requests on c one after another until stop.
func client(c net.Conn, stop *atomic.Bool) int64 {
	br := bufio.NewReader(c)
	var n int64
	for !stop.Load() {
		if _, err := io.WriteString(c, request); err != nil {
			log.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			log.Fatalf("status %d", resp.StatusCode)
		}
		n++
	}
	return n
}
