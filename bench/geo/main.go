// Command geo measures the geo router: one routing decision with a warm
// cache, GeoDNS queries per second over loopback UDP, and how long a node
// takes to open the real GeoLite2-City database and decide (and to reload
// it). It writes the figures to bench/results/geo.txt (or -out).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"perigee/bench/machine"
	"perigee/geo"
	"perigee/geo/demodb"
	"perigee/geo/geodns"
	"perigee/geo/geoip"
	"perigee/geo/geolitedb"
	"perigee/geo/rtt"
)

func main() {
	out := flag.String("out", "bench/results/geo.txt", "where to write the figures")
	dnsFor := flag.Duration("dns-duration", 5*time.Second, "how long to send DNS queries")
	clients := flag.Int("dns-clients", 8, "concurrent DNS clients")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the decision benchmark here")
	check := flag.Bool("check", false, "also time geoip.Check (validate's full verification) on the real database: seconds of CPU")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/geo:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(*out, *dnsFor, *clients, *check); err != nil {
		fmt.Fprintln(os.Stderr, "bench/geo:", err)
		os.Exit(1)
	}
}

func run(out string, dnsFor time.Duration, clients int, check bool) error {
	// Other work on a shared box slows every figure; record how busy it was.
	load := machine.LoadAvg()
	dir, err := os.MkdirTemp("", "perigee-bench-geo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "city.mmdb")
	if err := demodb.Write(path); err != nil {
		return err
	}
	db, err := geoip.Open(path, nil)
	if err != nil {
		return err
	}
	var nodes []geo.Node
	for i, c := range demodb.Cities {
		nodes = append(nodes, geo.Node{
			ID: fmt.Sprintf("n%d", i), Region: c.Name, Lat: c.Lat, Lon: c.Lon, Alive: true, Capacity: 1000, InFlight: int64(10 * i),
			PublicURL: fmt.Sprintf("https://n%d.example.net", i), Addrs: []netip.Addr{netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)})},
		})
	}
	fleet, err := geo.NewStaticFleet("n1", nodes)
	if err != nil {
		return err
	}
	learner := rtt.NewLearner(rtt.Config{Self: "n1", Locate: db.LatLon})
	for _, c := range demodb.Cities {
		learner.Observe(c.Client(), 40*time.Millisecond)
	}
	router := geo.NewRouter(geo.RouterConfig{}, db, fleet, learner)

	clientsList := make([]netip.Addr, len(demodb.Cities))
	for i, c := range demodb.Cities {
		clientsList[i] = c.Client()
		router.Decide(c.Client()) // warm the location cache and the answer memory
	}
	decide := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			router.Decide(clientsList[i%len(clientsList)])
			i++
		}
	})

	qps, err := dnsRate(router, dnsFor, clients)
	if err != nil {
		return err
	}
	realDB, err := realStartup(check)
	if err != nil {
		return err
	}
	report := fmt.Sprintf(`# perigee geo benchmarks
date: %s
machine: %s/%s, %d CPUs (GOMAXPROCS %d), %s, load average at start %s
fleet: %d nodes, learner with measurements, demo database

decide (warm cache): %d ns/op, %d B/op, %d allocs/op (target < 2000 ns)
geodns A queries over loopback UDP, %d clients for %s: %.0f queries/s
%s`, time.Now().UTC().Format(time.RFC3339), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), load,
		len(nodes), decide.NsPerOp(), decide.AllocedBytesPerOp(), decide.AllocsPerOp(), clients, dnsFor, qps, realDB)
	fmt.Print(report)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, []byte(report), 0o644)
}

// dnsRate runs a GeoDNS server and counts answered queries from clients
// asking for varying client subnets.
func dnsRate(router *geo.Router, d time.Duration, clients int) (float64, error) {
	// Unlimited: this measures the responder, and its clients share one /24.
	h, err := geodns.NewHandler(geo.DNSConfig{Listen: "127.0.0.1:0", Names: []string{"edge.example.net."}, RateLimit: geo.DNSRateLimit{PerSecond: -1}}, router, slog.New(slog.DiscardHandler))
	if err != nil {
		return 0, err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- geodns.Serve(ctx, pc, ln, h) }()
	defer func() { cancel(); <-served }()

	var answered, failed atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := dns.Dial("udp", pc.LocalAddr().String())
			if err != nil {
				failed.Add(1)
				return
			}
			defer conn.Close()
			for i := 0; time.Now().Before(deadline); i++ {
				city := demodb.Cities[(w+i)%len(demodb.Cities)]
				m := new(dns.Msg)
				m.SetQuestion("edge.example.net.", dns.TypeA)
				m.SetEdns0(1232, false)
				m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{
					Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: city.Networks[0].Addr().AsSlice(),
				})
				conn.SetDeadline(time.Now().Add(2 * time.Second))
				if err := conn.WriteMsg(m); err != nil {
					failed.Add(1)
					continue
				}
				if r, err := conn.ReadMsg(); err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
					failed.Add(1)
					continue
				}
				answered.Add(1)
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > answered.Load()/100 {
		return 0, fmt.Errorf("geodns: %d of %d queries failed", f, f+answered.Load())
	}
	return float64(answered.Load()) / d.Seconds(), nil
}

// realClients are a few addresses of the held-out list (geo/heldout_test.go),
// one or two per continent.
var realClients = []string{"146.141.1.1", "197.210.1.1", "143.107.1.1", "157.253.1.1", "171.64.1.1", "131.111.1.1", "132.66.1.1", "133.11.1.1", "49.36.1.1", "129.78.1.1", "2001:610::1"}

// realStartup times what a node does with the real database before its
// first answer — open it, build the router, decide once — then a warm
// decision over it, and a reload of a changed copy. It reports, rather than
// fails, when the database is not installed.
func realStartup(check bool) (string, error) {
	path, err := geolitedb.Path()
	if errors.Is(err, geolitedb.ErrMissing) {
		return fmt.Sprintf("real database: not measured (%v)\n", err), nil
	}
	if err != nil {
		return "", err
	}
	start := time.Now()
	db, err := geoip.Open(path, nil)
	if err != nil {
		return "", err
	}
	opened := time.Since(start)
	fleet, err := geo.NewStaticFleet("fra", []geo.Node{
		{ID: "fra", Lat: 50.11, Lon: 8.68, Alive: true, PublicURL: "https://fra.example.net"},
		{ID: "iad", Lat: 39.04, Lon: -77.49, Alive: true, PublicURL: "https://iad.example.net"},
		{ID: "tyo", Lat: 35.68, Lon: 139.69, Alive: true, PublicURL: "https://tyo.example.net"},
		{ID: "gru", Lat: -23.55, Lon: -46.63, Alive: true, PublicURL: "https://gru.example.net"},
	})
	if err != nil {
		return "", err
	}
	router := geo.NewRouter(geo.RouterConfig{}, db, fleet, nil)
	addrs := make([]netip.Addr, len(realClients))
	for i, a := range realClients {
		addrs[i] = netip.MustParseAddr(a)
	}
	router.Decide(addrs[0])
	ready := time.Since(start)
	for _, a := range addrs {
		router.Decide(a)
	}
	decide := testing.Benchmark(func(b *testing.B) {
		i := 0
		for b.Loop() {
			router.Decide(addrs[i%len(addrs)])
			i++
		}
	})

	// A reload reads and checks a changed file while the old one serves.
	dir, err := os.MkdirTemp("", "perigee-bench-geolite")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	cp := filepath.Join(dir, "GeoLite2-City.mmdb")
	if err := copyFile(path, cp); err != nil {
		return "", err
	}
	live, err := geoip.Open(cp, nil)
	if err != nil {
		return "", err
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(cp, later, later); err != nil {
		return "", err
	}
	start = time.Now()
	if changed, err := live.Reload(); err != nil || !changed {
		return "", fmt.Errorf("reload of the real database: changed=%v err=%v", changed, err)
	}
	reload := time.Since(start)

	report := fmt.Sprintf(`real GeoLite2-City (%s, built %s), 4-node fleet (fra, iad, tyo, gru):
  open: %s; ready (open + router + first decision): %s
  decide (warm cache): %d ns/op
  reload of a changed file (old one serving meanwhile): %s
`, db.Info().Type, db.Info().Built.Format(time.DateOnly), opened.Round(time.Millisecond), ready.Round(time.Millisecond),
		decide.NsPerOp(), reload.Round(time.Millisecond))
	if check {
		start = time.Now()
		if err := geoip.Check(path); err != nil {
			return "", err
		}
		report += fmt.Sprintf("  geoip.Check (validate's full verification): %s\n", time.Since(start).Round(time.Millisecond))
	}
	return report, nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}
