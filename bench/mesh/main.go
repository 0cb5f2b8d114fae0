// Command mesh measures the mesh at several cluster sizes, in-process over
// loopback sockets through faultnet (regions of ten, 1 ms one way within a
// region and 40 ms between), LAN settings: how long a load change takes to
// reach every node of its region, and every other node in its region's
// summary (p50/p99), gossip bytes per node per second with nothing
// changing, leader changes while nothing fails, and how long a crashed
// node takes to be declared dead everywhere. It writes
// bench/results/mesh.txt. With -model it simulates the protocol instead
// (bench/mesh/model), at the sizes given and at 500 nodes in 50 regions,
// as built and as it was before issue 13, and writes
// bench/results/mesh-model.txt.
//
//	go run ./bench/mesh -sizes 10,50,100 -trials 10
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
	match := flag.String("match", "", "with -model, run only the scenarios whose description holds this text")
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
		res, err := runModel(ns, *trials, *seed, *match)
		if err != nil {
			fatal(err)
		}
		write(*out, "bench/results/mesh-model.txt", res)
		return
	}

	var report strings.Builder
	fmt.Fprintf(&report, "# mesh benchmark, %s, %d CPUs shared with other work (load average at start: %s), LAN profile, in-process nodes over loopback UDP/TCP (faultnet: regions of %d, %v one way within, %v between)\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), machine.LoadAvg(), benchRegionSize, benchDelayIn, benchDelayOut)
	lan := memberlist.DefaultLANConfig()
	fmt.Fprintf(&report, "# memberlist: gossip %v to %d nodes, probe %v (timeout %v), suspicion mult %d, retransmit mult %d\n",
		lan.GossipInterval, lan.GossipNodes, lan.ProbeInterval, lan.ProbeTimeout, lan.SuspicionMult, lan.RetransmitMult)
	fmt.Fprintf(&report, "# reports: sampled every 250ms, sent to the region on change (twice), beats every 5s; summaries gossiped (mult 3) on change at most every 4s, beats every 5s; push/pull 1m\n# command: go run ./bench/mesh %s\n\n",
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
	fmt.Fprintf(&report, "# load average at the end: %s\n", machine.LoadAvg())
	write(*out, "bench/results/mesh.txt", report.String())
}

// The benchmark's fleet shape: regions of ten, and faultnet's one-way
// delays within a region and between regions.
const (
	benchRegionSize = 10
	benchDelayIn    = time.Millisecond
	benchDelayOut   = 40 * time.Millisecond
)

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
	c      *mesh.Cluster
	id     string
	region string
	rps    atomic.Int64 // the figure the bench moves; jitter is added below the change threshold
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
	regions := max(size/benchRegionSize, 1)
	for a := range regions {
		for b := range regions {
			d := benchDelayOut
			if a == b {
				d = benchDelayIn
			}
			nw.SetLink(regionName(a), regionName(b), faultnet.Link{Delay: d})
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nodes := make([]*benchNode, 0, size)
	defer func() {
		for _, n := range nodes {
			n.c.Shutdown()
		}
	}()
	var seed []string
	for i := range size {
		n := &benchNode{id: fmt.Sprintf("n%03d", i), region: regionName(i % regions)}
		n.rps.Store(1000)
		tr, err := nw.Transport(n.id, n.region, "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		c, err := mesh.Start(context.Background(), mesh.Config{Join: seed, Transport: tr}, mesh.NodeMeta{ID: n.id, Region: n.region}, n.sample, log)
		if err != nil {
			return "", err
		}
		n.c = c
		nodes = append(nodes, n)
		if seed == nil {
			seed = []string{c.Addr()}
		}
	}
	converged := func(o *benchNode) bool {
		return len(o.c.Members()) == size && len(o.c.Regions()) == regions && o.c.Region(o.region).Leader != ""
	}
	joined := time.Now()
	if !waitAll(nodes, 2*time.Duration(size)*time.Second+60*time.Second, converged) {
		var behind []string
		for _, o := range nodes {
			if !converged(o) {
				behind = append(behind, fmt.Sprintf("%s sees %d members, %d regions, leader %q", o.id, len(o.c.Members()), len(o.c.Regions()), o.c.Region(o.region).Leader))
			}
		}
		return "", fmt.Errorf("%d nodes did not converge in %v; %d behind: %s", size, time.Since(joined).Round(time.Second), len(behind), strings.Join(behind, "; "))
	}
	convergence := time.Since(joined)
	time.Sleep(6 * time.Second) // let join-time push/pull and first refreshes settle

	flaps := watchLeaders(nodes)
	steady := bandwidth(nw, size, window)

	var region, fleet []time.Duration
	for t := range trials {
		n := nodes[rand.IntN(len(nodes))]
		v := int64(2000 + t*1000)
		start := time.Now()
		n.rps.Store(v)
		want := regionRPS(nodes, n.region)
		var inRegion, elsewhere []*benchNode
		for _, o := range nodes {
			if o == n {
				continue
			}
			if o.region == n.region {
				inRegion = append(inRegion, o)
			} else {
				elsewhere = append(elsewhere, o)
			}
		}
		if !waitAll(inRegion, 30*time.Second, func(o *benchNode) bool { return sees(o.c, n.id, float64(v)) }) {
			return "", fmt.Errorf("size %d: load change %d not seen by its region in 30s", size, t)
		}
		region = append(region, time.Since(start))
		if len(elsewhere) > 0 {
			if !waitAll(elsewhere, 60*time.Second, func(o *benchNode) bool { return near(o.c.Region(n.region).RPS, want) }) {
				return "", fmt.Errorf("size %d: load change %d not in its region's summary everywhere in 60s", size, t)
			}
			fleet = append(fleet, time.Since(start))
		}
		n.rps.Store(1000)
		// Until the region's summary is back, so the next change is timed alone.
		back := regionRPS(nodes, n.region)
		waitAll(elsewhere, 60*time.Second, func(o *benchNode) bool { return near(o.c.Region(n.region).RPS, back) })
	}
	changes := flaps.stop()

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

	return format(size, regions, convergence, region, fleet, detect, steady, changes), nil
}

func regionName(i int) string { return fmt.Sprintf("region-%02d", i) }

// regionRPS is what a region's summary should show: the sum of its
// members' figures (their jitter stays below what is sent).
func regionRPS(nodes []*benchNode, region string) float64 {
	sum := 0.0
	for _, n := range nodes {
		if n.region == region {
			sum += float64(n.rps.Load())
		}
	}
	return sum
}

func near(got, want float64) bool { return math.Abs(got-want) <= 0.03*want }

// leaderWatch counts, over all nodes, how often the leader a node shows
// for its own region changes.
type leaderWatch struct {
	done    chan struct{}
	changes chan int
}

func watchLeaders(nodes []*benchNode) *leaderWatch {
	w := &leaderWatch{done: make(chan struct{}), changes: make(chan int, 1)}
	go func() {
		last := map[string]string{}
		for _, n := range nodes {
			last[n.id] = n.c.Region(n.region).Leader
		}
		changes := 0
		for {
			select {
			case <-w.done:
				w.changes <- changes
				return
			case <-time.After(500 * time.Millisecond):
			}
			for _, n := range nodes {
				if l := n.c.Region(n.region).Leader; l != last[n.id] {
					last[n.id] = l
					changes++
				}
			}
		}
	}()
	return w
}

func (w *leaderWatch) stop() int {
	close(w.done)
	return <-w.changes
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

func format(size, regions int, convergence time.Duration, region, fleet, detect []time.Duration, bw rates, leaderChanges int) string {
	q := func(d []time.Duration, p float64) string {
		if len(d) == 0 {
			return "-"
		}
		return quantile(d, p).Round(time.Millisecond).String()
	}
	lan := memberlist.DefaultLANConfig()
	// Suspicion timeout: SuspicionMult * log10(N) * ProbeInterval when peers
	// confirm, plus about one probe interval and timeout to notice.
	scale := math.Max(1, math.Log10(float64(size)))
	minSusp := time.Duration(float64(lan.SuspicionMult) * scale * float64(lan.ProbeInterval))
	predDetect := minSusp + lan.ProbeInterval + lan.ProbeTimeout
	return fmt.Sprintf(`nodes=%d regions=%d
  converged (every node sees every member, every region and its region's leader) %s after the last node started
  change seen by its whole region: p50=%s p99=%s max=%s (n=%d)   formula: <= a sample (250ms) + %v
  change seen by the whole fleet, in its region's summary: p50=%s p99=%s max=%s (n=%d)
  leader changes while nothing failed (all nodes, during the window and the changes): %d
  crash declared dead by all: p50=%s max=%s (n=%d)   formula: >= %v (suspicion %v + probe)
  gossip bytes/node/s (steady, nothing changing): udp=%.0f tcp=%.0f total=%.0f   target < 10240

`, size, regions, convergence.Round(time.Millisecond), q(region, .5), q(region, .99), q(region, 1), len(region), benchDelayIn,
		q(fleet, .5), q(fleet, .99), q(fleet, 1), len(fleet), leaderChanges,
		q(detect, .5), q(detect, 1), len(detect), predDetect, minSusp,
		bw.packet, bw.stream, bw.packet+bw.stream)
}
