// Command h1server weighs fasthttp against net/http as the node's inbound
// HTTP/1.1 server, by CPU time per request, which holds up on shared cores
// where req/s does not.
//
// One process serves these targets over TLS on loopback, the proxies all
// in front of one sample backend in a child process (so its CPU is not
// counted):
//
//	node           the perigee node itself (net/http server, its handler)
//	node-adaptor   the same node handler behind fasthttp, via fasthttpadaptor
//	std-min        net/http server + a minimal proxy handler over edge/h1client
//	fast-adaptor   fasthttp + fasthttpadaptor + that same minimal handler
//	own-watch      a server loop of http.ReadRequest + that minimal handler,
//	               one goroutine per request watching for the client leaving
//	own-nowatch    the same loop, not watching (fasthttp's model)
//	std-self       net/http answering 64 bytes itself: its server's cost
//	fast-self      fasthttp answering 64 bytes itself
//	std-host       net/http server + fasthttp.HostClient (headers converted)
//	fast-h1client  fasthttp server + edge/h1client (request converted)
//	fast-native    fasthttp server + fasthttp.HostClient: the ceiling
//
// The four in the middle split the gap between std-min and fast-native
// into the server's part and the client's.
//
// wrk (a separate process) drives each in turn for -d, for -rounds rounds;
// the report gives medians of req/s and of this process's CPU per request
// (getrusage), which is the server's alone.
//
// It is its own module so that fasthttp stays out of perigee's go.mod:
//
//	cd bench/h1server && go run . [-c 32] [-d 3s] [-rounds 3]
//
// With -corpus it times nothing: it runs the node's smuggling corpus
// and path corpora against fasthttp's parser instead (parser.go).
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"perigee/bench/machine"
	"perigee/bench/stats"
	"perigee/certs"
	"perigee/edge"
	"perigee/edge/config"
	"perigee/edge/h1client"
	"perigee/edge/samplebackend"
)

// body64 is what the self-answering targets send: the backend's size.
var body64 = []byte(strings.Repeat("x", 64))

func main() {
	if len(os.Args) == 3 && os.Args[1] == "backend" {
		log.Fatal(samplebackend.Serve(context.Background(), os.Args[2], samplebackend.Options{Name: "bench", Size: 64}))
	}
	conns := flag.Int("c", 32, "wrk connections")
	dur := flag.Duration("d", 3*time.Second, "length of a round")
	rounds := flag.Int("rounds", 3, "rounds per target")
	out := flag.String("out", "../results/h1server.txt", "report file")
	only := flag.String("only", "", "comma-separated targets to run (default all)")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the rounds to this file (use with -only one target)")
	parser := flag.Bool("corpus", false, "instead of timing, run the node's smuggling and path corpora against fasthttp's parser")
	flag.Parse()
	if *parser {
		if err := checkParser("../../edge/urlpath/testdata/smuggling.txt", "../../edge/urlpath/testdata/corpus.txt", "../results/h1parser.txt"); err != nil {
			log.Fatal(err)
		}
		return
	}

	backend := freeAddr()
	child := exec.Command(os.Args[0], "backend", backend)
	child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with us
	if err := child.Start(); err != nil {
		log.Fatal(err)
	}
	defer child.Process.Kill()
	waitTCP(backend)

	cert, err := certs.SelfSigned(nil)
	if err != nil {
		log.Fatal(err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"http/1.1"}}
	node := startNode(backend, cert)
	h1 := h1client.New(h1client.Options{ConnectTimeout: time.Second, ResponseHeaderTimeout: 30 * time.Second, MaxIdlePerHost: 512}, nil)
	minimal := minimalProxy(backend, h1)
	host := &fasthttp.HostClient{Addr: backend, MaxConns: 512}

	targets := []struct{ name, addr string }{
		{"node", node.Addrs().HTTPS},
		{"node-adaptor", serveFast(tlsCfg, fasthttpadaptor.NewFastHTTPHandler(node))},
		{"std-min", serveStd(tlsCfg, minimal)},
		{"fast-adaptor", serveFast(tlsCfg, fasthttpadaptor.NewFastHTTPHandler(minimal))},
		{"own-watch", serveOwn(tlsCfg, minimal, true)},
		{"own-nowatch", serveOwn(tlsCfg, minimal, false)},
		{"std-self", serveStd(tlsCfg, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(body64) }))},
		{"fast-self", serveFast(tlsCfg, func(ctx *fasthttp.RequestCtx) { ctx.Write(body64) })},
		{"std-host", serveStd(tlsCfg, stdOverHostClient(backend, host))},
		{"fast-h1client", serveFast(tlsCfg, fastOverH1client(backend, h1))},
		{"fast-native", serveFast(tlsCfg, func(ctx *fasthttp.RequestCtx) {
			req := &ctx.Request
			req.Header.Del("Connection")
			req.URI().SetScheme("http") // HostClient refuses an https URI on a plain connection
			if err := host.Do(req, &ctx.Response); err != nil {
				ctx.Error("upstream failed", fasthttp.StatusBadGateway)
			}
		})},
	}

	if *only != "" {
		keep := strings.Split(*only, ",")
		targets = slices.DeleteFunc(targets, func(t struct{ name, addr string }) bool { return !slices.Contains(keep, t.name) })
		if len(targets) == 0 {
			log.Fatalf("-only %s: no such target", *only)
		}
	}

	start, loadStart := time.Now(), machine.LoadAvg()
	for _, t := range targets { // warm up pools and code paths
		round(t.addr, *conns, time.Second)
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	reqs, cpu := map[string][]float64{}, map[string][]float64{}
	for range *rounds {
		for _, t := range targets {
			n, rps, used := round(t.addr, *conns, *dur)
			reqs[t.name] = append(reqs[t.name], rps)
			cpu[t.name] = append(cpu[t.name], float64(used.Nanoseconds())/1e3/float64(n))
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "h1server benchmark, %s, %s, nproc %d, GOMAXPROCS %d, %s\n", start.UTC().Format("2006-01-02 15:04 MST"),
		machine.CPUModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Fprintf(&b, "command: cd bench/h1server && go run . -c %d -d %v -rounds %d\n", *conns, *dur, *rounds)
	fmt.Fprintf(&b, "load average at start %s, at end %s (the cores are shared: req/s is noise, CPU per request is the figure)\n", loadStart, machine.LoadAvg())
	fmt.Fprintf(&b, "wrk -t1 -c%d over TLS keep-alive HTTP/1.1; backend (64-byte body) in a child process; CPU is this process's: the server's alone\n\n", *conns)
	fmt.Fprintf(&b, "%-13s %9s %12s %10s   %s\n", "target", "req/s", "CPU us/req", "vs first", "CPU us/req per round")
	base := stats.Median(cpu[targets[0].name])
	for _, t := range targets {
		c := stats.Median(cpu[t.name])
		fmt.Fprintf(&b, "%-13s %9.0f %12.1f %9.2fx   %s\n", t.name, stats.Median(reqs[t.name]), c, c/base, stats.Join("%.1f", cpu[t.name]))
	}
	fmt.Print(b.String())
	if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}

// startNode starts a perigee node with one route to backend.
func startNode(backend string, cert *tls.Certificate) *edge.Node {
	dir, err := os.MkdirTemp("", "h1server")
	if err != nil {
		log.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := certs.WritePEM(cert, certFile, keyFile); err != nil {
		log.Fatal(err)
	}
	path := filepath.Join(dir, "node.yaml")
	yaml := fmt.Sprintf(`node: {id: bench, region: local}
listen: {https: "127.0.0.1:0", admin: "127.0.0.1:0"}
tls: {cert: %q, key: %q}
access_log: {enabled: false}
services:
  backend: {backends: [{url: "http://%s"}]}
routes:
  - {match: {path_prefix: /}, service: backend}
`, certFile, keyFile, backend)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		log.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		log.Fatal(err)
	}
	n, err := edge.New(cfg, edge.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		log.Fatal(err)
	}
	if err := n.Start(); err != nil {
		log.Fatal(err)
	}
	return n
}

// minimalProxy forwards to backend with no more than a proxy must do.
func minimalProxy(backend string, rt http.RoundTripper) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := r.WithContext(r.Context())
		out.URL.Scheme, out.URL.Host, out.RequestURI = "http", backend, ""
		res, err := rt.RoundTrip(out)
		if err != nil {
			http.Error(w, "upstream failed", http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		h := w.Header()
		for k, vv := range res.Header {
			h[k] = vv
		}
		w.WriteHeader(res.StatusCode)
		io.Copy(w, res.Body)
	})
}

// stdOverHostClient is the minimal proxy with net/http's server in front
// of fasthttp's client: the headers are copied into its types and back.
func stdOverHostClient(backend string, host *fasthttp.HostClient) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(res)
		req.Header.SetMethod(r.Method)
		req.SetRequestURI("http://" + backend + r.RequestURI)
		for k, vv := range r.Header {
			for _, v := range vv {
				req.Header.Add(k, v)
			}
		}
		if err := host.Do(req, res); err != nil {
			http.Error(w, "upstream failed", http.StatusBadGateway)
			return
		}
		h := w.Header()
		res.Header.VisitAll(func(k, v []byte) { h.Add(string(k), string(v)) })
		w.WriteHeader(res.StatusCode())
		w.Write(res.Body())
	})
}

// fastOverH1client is the minimal proxy with fasthttp's server in front of
// edge/h1client: the request becomes an http.Request, the response's
// headers go back into fasthttp's. Its context is a plain cancelable one:
// a RequestCtx would cost h1client's context.AfterFunc a goroutine.
func fastOverH1client(backend string, rt http.RoundTripper) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		out := &http.Request{Method: string(ctx.Method()), URL: &url.URL{Scheme: "http", Host: backend, Path: string(ctx.Path())},
			Header: make(http.Header), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Host: string(ctx.Host())}
		ctx.Request.Header.VisitAll(func(k, v []byte) { out.Header.Add(string(k), string(v)) })
		c, cancel := context.WithCancel(context.Background())
		defer cancel()
		res, err := rt.RoundTrip(out.WithContext(c))
		if err != nil {
			ctx.Error("upstream failed", fasthttp.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		for k, vv := range res.Header {
			for _, v := range vv {
				ctx.Response.Header.Add(k, v)
			}
		}
		ctx.SetStatusCode(res.StatusCode)
		var buf [4 << 10]byte
		io.CopyBuffer(struct{ io.Writer }{ctx}, res.Body, buf[:]) // no ReaderFrom: one stack buffer, not io.Copy's 32 KiB
	}
}

func serveStd(cfg *tls.Config, h http.Handler) string {
	ln := listen()
	srv := &http.Server{Handler: h, TLSConfig: cfg.Clone(), ReadHeaderTimeout: 10 * time.Second}
	go srv.ServeTLS(ln, "", "")
	return ln.Addr().String()
}

func serveFast(cfg *tls.Config, h fasthttp.RequestHandler) string {
	ln := listen()
	srv := &fasthttp.Server{Handler: h, ReadTimeout: 90 * time.Second}
	go srv.Serve(tls.NewListener(ln, cfg.Clone()))
	return ln.Addr().String()
}

func listen() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	return ln
}

func freeAddr() string {
	ln := listen()
	defer ln.Close()
	return ln.Addr().String()
}

func waitTCP(addr string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	log.Fatalf("backend on %s never came up", addr)
}

var (
	wrkRPS   = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkTotal = regexp.MustCompile(`(\d+) requests in`)
	wrkErrs  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// round runs wrk against addr for d and returns the requests it made,
// their rate and the CPU this process used meanwhile.
func round(addr string, conns int, d time.Duration) (int64, float64, time.Duration) {
	cpu0 := machine.SelfCPU()
	out, err := exec.Command("wrk", "-t1", "-c"+strconv.Itoa(conns), "-d"+d.String(), "https://"+addr+"/").CombinedOutput()
	used := machine.SelfCPU() - cpu0
	if err != nil {
		log.Fatalf("wrk: %v\n%s", err, out)
	}
	if m := wrkErrs.FindSubmatch(out); m != nil {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		status, body := "", []byte(nil)
		if resp, err := c.Get("https://" + addr + "/"); err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			status = resp.Status
		}
		log.Fatalf("wrk against %s: %s failed responses; one answer: %s %s", addr, m[1], status, body)
	}
	rps, total := wrkRPS.FindSubmatch(out), wrkTotal.FindSubmatch(out)
	if rps == nil || total == nil {
		log.Fatalf("wrk: no figures in\n%s", out)
	}
	r, _ := strconv.ParseFloat(string(rps[1]), 64)
	n, _ := strconv.ParseInt(string(total[1]), 10, 64)
	return n, r, used
}
