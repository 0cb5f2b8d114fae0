// Command geo measures the geo router: one routing decision with a warm
// cache, and GeoDNS queries per second over loopback UDP. It writes the
// figures to bench/results/geo.txt (or -out).
package main

import (
	"context"
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
	"perigee/geo/rtt"
)

func main() {
	out := flag.String("out", "bench/results/geo.txt", "where to write the figures")
	dnsFor := flag.Duration("dns-duration", 5*time.Second, "how long to send DNS queries")
	clients := flag.Int("dns-clients", 8, "concurrent DNS clients")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the decision benchmark here")
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
	if err := run(*out, *dnsFor, *clients); err != nil {
		fmt.Fprintln(os.Stderr, "bench/geo:", err)
		os.Exit(1)
	}
}

func run(out string, dnsFor time.Duration, clients int) error {
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
	report := fmt.Sprintf(`# perigee geo benchmarks
date: %s
machine: %s/%s, %d CPUs (GOMAXPROCS %d), %s, load average at start %s
fleet: %d nodes, learner with measurements, demo database

decide (warm cache): %d ns/op, %d B/op, %d allocs/op (target < 2000 ns)
geodns A queries over loopback UDP, %d clients for %s: %.0f queries/s
`, time.Now().UTC().Format(time.RFC3339), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), load,
		len(nodes), decide.NsPerOp(), decide.AllocedBytesPerOp(), decide.AllocsPerOp(), clients, dnsFor, qps)
	fmt.Print(report)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, []byte(report), 0o644)
}

// dnsRate runs a GeoDNS server and counts answered queries from clients
// asking for varying client subnets.
func dnsRate(router *geo.Router, d time.Duration, clients int) (float64, error) {
	h, err := geodns.NewHandler(geo.DNSConfig{Listen: "127.0.0.1:0", Names: []string{"edge.example.net."}}, router, slog.New(slog.DiscardHandler))
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
