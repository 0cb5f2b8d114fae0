// Command mesh measures the mesh at several cluster sizes, in-process over
// loopback sockets with LAN settings: how long a load change takes to reach
// every node (p50/p99), how long a crashed node takes to be declared dead
// everywhere, and gossip bytes per node per second, next to what
// memberlist's formulas predict. It writes bench/results/mesh.txt.
// With -model it simulates the protocol instead (bench/mesh/model), at the
// sizes given and at 500 nodes in 50 regions, for the current protocol and
// a proposed one, and writes bench/results/mesh-model.txt.
//
//	go run ./bench/mesh -sizes 10,50,200
//	go run ./bench/mesh -model -sizes 10,50,100 -trials 40
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/bench/machine"
	"perigee/mesh"
	"perigee/mesh/faultnet"
	"perigee/telemetry"
)

func main() {
	sizes := flag.String("sizes", "10,50,200", "cluster sizes")
	trials := flag.Int("trials", 100, "load changes timed per size")
	kills := flag.Int("kills", 3, "crashes timed per size")
	window := flag.Duration("window", 10*time.Second, "bandwidth measuring window")
	out := flag.String("out", "", "results file (default bench/results/mesh.txt, or mesh-model.txt with -model)")
	modelled := flag.Bool("model", false, "simulate the protocol (bench/mesh/model) instead of running real nodes")
	seed := flag.Uint64("seed", 1, "the model's random seed")
	flag.Parse()
	if *modelled {
		var ns []int
		for _, s := range strings.Split(*sizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 2 {
				fatal(fmt.Errorf("bad size %q", s))
			}
			ns = append(ns, n)
		}
		res, err := runModel(ns, *trials, *seed)
		if err != nil {
			fatal(err)
		}
		write(*out, "bench/results/mesh-model.txt", res)
		return
	}

	var report strings.Builder
	fmt.Fprintf(&report, "# mesh benchmark, %s, %d CPUs (load average at start: %s), LAN profile, in-process nodes over loopback UDP/TCP (faultnet, no faults)\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), machine.LoadAvg())
	lan := memberlist.DefaultLANConfig()
	fmt.Fprintf(&report, "# memberlist: gossip %v to %d nodes, probe %v (timeout %v), suspicion mult %d, retransmit mult %d\n",
		lan.GossipInterval, lan.GossipNodes, lan.ProbeInterval, lan.ProbeTimeout, lan.SuspicionMult, lan.RetransmitMult)
	fmt.Fprintf(&report, "# reports: sampled every 250ms, relay mult 6 on change; beats (unchanged node) every 5s, relay mult 3\n# command: go run ./bench/mesh %s\n\n",
		strings.Join(os.Args[1:], " "))
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 2 {
			fatal(fmt.Errorf("bad size %q", s))
		}
		res, err := run(n, *trials, *kills, *window)
		if err != nil {
			fatal(err)
		}
		report.WriteString(res)
		fmt.Print(res)
	}
	write(*out, "bench/results/mesh.txt", report.String())
}

func write(path, fallback, s string) {
	if path == "" {
		path = fallback
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench/mesh:", err)
	os.Exit(1)
}

type benchNode struct {
	c   *mesh.Cluster
	id  string
	rps atomic.Int64 // the figure the bench moves; jitter is added below the change threshold
}

func (n *benchNode) sample() telemetry.NodeSample {
	base := float64(n.rps.Load())
	return benchSample(base * (1 + 0.04*(rand.Float64()-0.5))) // jitter that must not be gossiped
}

// benchSample is a node's figures with one service, as the bench gossips.
func benchSample(rps float64) telemetry.NodeSample {
	return telemetry.NodeSample{RPS: rps, InFlight: 10, CPU: 0.5, Services: map[string]telemetry.ServiceSample{
		"api": {RPS: rps, Backends: 3, HealthyBackends: 3, Latency: latency()},
	}}
}

// latency is a typical window histogram, so reports have a realistic size.
var latency = func() func() telemetry.HistogramSnapshot {
	var h telemetry.Histogram
	for i := range 500 {
		h.Observe(time.Duration(2+i%40) * time.Millisecond)
	}
	s := h.Snapshot()
	return func() telemetry.HistogramSnapshot { return s }
}()

func run(size, trials, kills int, window time.Duration) (string, error) {
	nw := faultnet.New()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nodes := make([]*benchNode, 0, size)
	defer func() {
		for _, n := range nodes {
			n.c.Shutdown()
		}
	}()
	var seed []string
	for i := range size {
		n := &benchNode{id: fmt.Sprintf("n%03d", i)}
		n.rps.Store(1000)
		tr, err := nw.Transport(n.id, "eu", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		c, err := mesh.Start(context.Background(), mesh.Config{Join: seed, Transport: tr}, mesh.NodeMeta{ID: n.id, Region: "eu"}, n.sample, log)
		if err != nil {
			return "", err
		}
		n.c = c
		nodes = append(nodes, n)
		if seed == nil {
			seed = []string{c.Addr()}
		}
	}
	if !waitAll(nodes, time.Duration(size)*time.Second+30*time.Second, func(o *benchNode) bool { return len(o.c.Members()) == size }) {
		return "", fmt.Errorf("%d nodes did not converge on membership", size)
	}
	time.Sleep(6 * time.Second) // let join-time push/pull and first refreshes settle

	steady := bandwidth(nw, size, window)

	var conv []time.Duration
	for t := range trials {
		n := nodes[rand.IntN(len(nodes))]
		v := int64(2000 + t*1000)
		start := time.Now()
		n.rps.Store(v)
		ok := waitAll(nodes, 30*time.Second, func(o *benchNode) bool { return sees(o.c, n.id, float64(v)) })
		if !ok {
			return "", fmt.Errorf("size %d: load change %d not seen everywhere in 30s", size, t)
		}
		conv = append(conv, time.Since(start))
		n.rps.Store(1000)
		time.Sleep(300 * time.Millisecond)
	}

	var detect []time.Duration
	for k := range kills {
		victim := nodes[len(nodes)-1-k]
		rest := nodes[:len(nodes)-1-k]
		start := time.Now()
		victim.c.Shutdown()
		ok := waitAll(rest, 2*time.Minute, func(o *benchNode) bool { return isGone(o.c, victim.id) })
		if !ok {
			return "", fmt.Errorf("size %d: crash of %s not detected everywhere in 2 minutes", size, victim.id)
		}
		detect = append(detect, time.Since(start))
	}

	return format(size, conv, detect, steady), nil
}

// waitAll polls until cond holds for every node; a node that satisfied it
// is not asked again, which keeps polling 200 nodes affordable.
func waitAll(nodes []*benchNode, limit time.Duration, cond func(*benchNode) bool) bool {
	pending := slices.Clone(nodes)
	deadline := time.Now().Add(limit)
	for len(pending) > 0 {
		if time.Now().After(deadline) {
			return false
		}
		pending = slices.DeleteFunc(pending, cond)
		if len(pending) > 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return true
}

func sees(c *mesh.Cluster, id string, rps float64) bool {
	for _, m := range c.Members() {
		if m.Meta.ID == id {
			return math.Abs(m.Report.RPS-rps) <= 0.03*rps
		}
	}
	return false
}

func isGone(c *mesh.Cluster, id string) bool {
	for _, m := range c.Members() {
		if m.Meta.ID == id {
			return m.State == mesh.StateDead || m.State == mesh.StateLeft
		}
	}
	return true
}

type rates struct{ packet, stream float64 }

func bandwidth(nw *faultnet.Network, size int, window time.Duration) rates {
	before := nw.Stats()
	time.Sleep(window)
	after := nw.Stats()
	per := float64(size) * window.Seconds()
	return rates{float64(after.PacketBytes-before.PacketBytes) / per, float64(after.StreamBytes-before.StreamBytes) / per}
}

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func format(size int, conv, detect []time.Duration, bw rates) string {
	lan := memberlist.DefaultLANConfig()
	// Epidemic spread: each informed node tells GossipNodes others per
	// gossip interval, so about log(N)/log(1+GossipNodes) rounds, after up
	// to one sample interval for the change to be read.
	rounds := math.Ceil(math.Log(float64(size)) / math.Log(float64(1+lan.GossipNodes)))
	predConv := time.Duration(rounds)*lan.GossipInterval + 125*time.Millisecond
	// Suspicion timeout: SuspicionMult * log10(N) * ProbeInterval when peers
	// confirm, plus about one probe interval and timeout to notice.
	scale := math.Max(1, math.Log10(float64(size)))
	minSusp := time.Duration(float64(lan.SuspicionMult) * scale * float64(lan.ProbeInterval))
	predDetect := minSusp + lan.ProbeInterval + lan.ProbeTimeout
	// Steady state is beats only: every node's beat every 5s, each node
	// relaying each 3*ceil(log10(N+1)) times, about 26 bytes framed.
	predBeats := float64(size) / 5 * 3 * math.Ceil(math.Log10(float64(size+1))) * 26
	return fmt.Sprintf(`nodes=%d
  load change seen by all: p50=%v p99=%v max=%v (n=%d)   formula: ~%v (%.0f gossip rounds + half a sample)
  crash declared dead by all: p50=%v max=%v (n=%d)   formula: >= %v (suspicion %v + probe)
  gossip bytes/node/s (steady, beats only): udp=%.0f tcp=%.0f total=%.0f   formula: beats ~%.0f + probes; target < 10240

`, size, quantile(conv, 0.5).Round(time.Millisecond), quantile(conv, 0.99).Round(time.Millisecond), quantile(conv, 1).Round(time.Millisecond), len(conv),
		predConv, rounds,
		quantile(detect, 0.5).Round(time.Millisecond), quantile(detect, 1).Round(time.Millisecond), len(detect), predDetect, minSusp,
		bw.packet, bw.stream, bw.packet+bw.stream, predBeats)
}
