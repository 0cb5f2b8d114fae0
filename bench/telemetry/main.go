// Command telemetry measures the telemetry path at default settings: how
// small a batch gets (zstd at each level, with and without a trained
// dictionary, against gzip and no compression), what that costs a node in
// bytes per minute, and how many batches per second one aggregator ingests
// from 100 simulated nodes on this machine, and what a restart costs the
// aggregator (time to listen, memory held) over a store of half of -stored
// samples and of all of them. Ingest runs one aggregator and then two side
// by side; both sections say what the aggregator holds in memory per
// million stored samples. It writes bench/results/telemetry.txt.
//
//	go run ./bench/telemetry [-out bench/results/telemetry.txt] [-ingest 10s] [-stored 1000000] [-only restart]
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/dict"
	"github.com/klauspost/compress/zstd"

	"perigee/aggregator"
	"perigee/aggregator/store"
	"perigee/bench/machine"
	"perigee/telemetry"
	"perigee/telemetry/ship"
	"perigee/telemetry/wire"
	"perigee/telemetry/wire/workload"
)

func main() {
	out := flag.String("out", "bench/results/telemetry.txt", "where to write the figures")
	ingestFor := flag.Duration("ingest", 10*time.Second, "how long to run the ingest benchmark")
	nodes := flag.Int("nodes", 100, "simulated nodes for the ingest benchmark")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the ingest run (aggregator and clients) to this file")
	stored := flag.Int("stored", 1_000_000, "samples in the larger store of the restart figures (the other holds half)")
	only := flag.String("only", "", "run one section: compression, ingest or restart")
	flag.Parse()
	var report strings.Builder
	fmt.Fprintf(&report, "perigee telemetry benchmark, %s, %d CPUs, %s\n\n", time.Now().UTC().Format(time.DateOnly), runtime.NumCPU(), runtime.Version())
	sections := []struct {
		name string
		run  func() error
	}{
		{"compression", func() error { return compression(&report) }},
		{"ingest", func() error { return ingest(&report, *nodes, *ingestFor, *cpuProfile) }},
		{"restart", func() error { return restart(&report, *stored) }},
	}
	for _, sec := range sections {
		if *only != "" && *only != sec.name {
			continue
		}
		if err := sec.run(); err != nil {
			fail(err)
		}
	}
	fmt.Print(report.String())
	if err := os.WriteFile(*out, []byte(report.String()), 0o644); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench telemetry:", err)
	os.Exit(1)
}

func compression(w io.Writer) error {
	rng := rand.New(rand.NewPCG(1, 2))
	const batches = 240 // 20 minutes of one node
	start := time.Now()
	var raws, jsons [][]byte
	var bts []*wire.Batch
	for i := range batches {
		b := workload.Batch(rng, "ams-1", uint64(i+1), start.Add(time.Duration(i)*5*time.Second))
		bts = append(bts, b)
		raws = append(raws, wire.AppendPayload(nil, b))
		j, err := json.Marshal(b)
		if err != nil {
			return err
		}
		jsons = append(jsons, j)
	}
	// Train a dictionary here too, on other batches than those it is
	// measured on, to compare with the embedded one.
	var train [][]byte
	for i := range 200 {
		train = append(train, wire.AppendPayload(nil, workload.Batch(rng, "fra-1", uint64(i+1), start)))
	}
	dictionary, err := dict.BuildZstdDict(train, dict.Options{MaxDictSize: 32 << 10, HashBytes: 6})
	if err != nil {
		return fmt.Errorf("train dictionary: %w", err)
	}
	// What the shipper sends: whole frames from the sealer, with the newest
	// dictionary embedded in the binary (trained by telemetry/wire/dictgen
	// on other batches than these). Its time includes payload encoding.
	sealer, err := wire.NewSealer(wire.CodecZstd, wire.DefaultLevel)
	if err != nil {
		return err
	}
	const frameOverhead = 31 // header and checksum of the other rows, see wire/frame.go
	type codec struct {
		name string
		size func(i int) int // frame bytes of batch i
	}
	body := func(enc func([]byte) []byte) func(int) int {
		return func(i int) int { return len(enc(raws[i])) + frameOverhead }
	}
	zstdAt := func(level zstd.EncoderLevel, opts ...zstd.EOption) func([]byte) []byte {
		zw, err := zstd.NewWriter(nil, append([]zstd.EOption{zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1)}, opts...)...)
		if err != nil {
			fail(err)
		}
		return func(b []byte) []byte { return zw.EncodeAll(b, nil) }
	}
	codecs := []codec{
		{"none (binary payload)", body(func(b []byte) []byte { return b })},
		{"gzip default", body(func(b []byte) []byte {
			var buf bytes.Buffer
			gw := gzip.NewWriter(&buf)
			gw.Write(b)
			gw.Close()
			return buf.Bytes()
		})},
		{"zstd fastest", body(zstdAt(zstd.SpeedFastest))},
		{"zstd default, no dict", body(zstdAt(zstd.SpeedDefault))},
		{"zstd better", body(zstdAt(zstd.SpeedBetterCompression))},
		{"zstd best", body(zstdAt(zstd.SpeedBestCompression))},
		{"zstd default + dict trained here", body(zstdAt(zstd.SpeedDefault, zstd.WithEncoderDict(dictionary)))},
		{"zstd default + embedded dict (shipped)", func(i int) int { return len(sealer.Seal(bts[i])) }},
	}
	var rawTotal, jsonTotal int
	for i := range raws {
		rawTotal += len(raws[i])
		jsonTotal += len(jsons[i])
	}
	fmt.Fprintf(w, "Compression, %d batches of one node at default settings (5s interval: 5 samples x 3 services, 25 access records, ~0.5 decisions)\n", batches)
	fmt.Fprintf(w, "  JSON of the same records: %d B/batch; our binary payload (columnar, uncompressed): %d B/batch\n", jsonTotal/batches, rawTotal/batches)
	fmt.Fprintf(w, "  %-38s %10s %9s %9s %12s %14s\n", "codec", "B/batch", "vs JSON", "vs binary", "B/node/min", "encode us/batch")
	for _, c := range codecs {
		t0 := time.Now()
		total := 0
		for i := range raws {
			total += c.size(i)
		}
		per := time.Since(t0) / batches
		perBatch := float64(total) / batches
		fmt.Fprintf(w, "  %-38s %10.0f %8.1fx %8.1fx %12.0f %14.0f\n", c.name, perBatch, float64(jsonTotal)/batches/perBatch,
			float64(rawTotal)/batches/perBatch, perBatch*12, float64(per.Microseconds()))
	}
	fmt.Fprintf(w, "  (B/node/min = frame bytes x 12 batches per minute; shipped = real frames of wire.Sealer, encode time including the payload)\n\n")
	return nil
}

// ingest measures one aggregator, then two side by side, each run fed by
// the same simulated nodes posting pre-sealed batches as fast as they are
// acknowledged (with two, each node posts to one of them, half the nodes
// to each). Aggregators and clients share this process and its cores, so
// this understates dedicated aggregators, and two on one machine measure
// how the tier shares a machine, not how it scales across machines.
func ingest(w io.Writer, nodes int, dur time.Duration, cpuProfile string) error {
	tokens := map[string]string{}
	for i := range nodes {
		tokens[fmt.Sprintf("node-%03d", i)] = fmt.Sprintf("bench-token-%03d-0123456789", i)
	}
	sealer, err := wire.NewSealer(wire.CodecZstd, wire.DefaultLevel)
	if err != nil {
		return err
	}
	// Pre-seal so the figure is the aggregators' rate, not the clients'.
	const perNode = 400
	frames := make([][][]byte, nodes)
	rng := rand.New(rand.NewPCG(3, 4))
	now := time.Now()
	samplesPerBatch := 0
	for n := range nodes {
		for s := range perNode {
			b := workload.Batch(rng, fmt.Sprintf("node-%03d", n), uint64(s+1), now)
			samplesPerBatch = len(b.Samples)
			frames[n] = append(frames[n], sealer.Seal(b))
		}
	}
	if cpuProfile != "" {
		pf, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintf(w, "Ingest, %d simulated nodes over HTTP/2 (8 connections per aggregator), %v per run, clients and aggregators in one process on the same %d CPUs, every batch fsynced (group commit) before its 200; %d samples a batch\n",
		nodes, dur, runtime.NumCPU(), samplesPerBatch)
	for _, aggs := range []int{1, 2} {
		r, err := ingestRun(aggs, tokens, frames, dur)
		if err != nil {
			return err
		}
		var total int64
		per := make([]string, aggs)
		for i, n := range r.stored {
			total += n
			per[i] = fmt.Sprintf("%.0f", float64(n)/r.elapsed.Seconds())
		}
		samples := float64(total) * float64(samplesPerBatch)
		cpu := r.cpu / time.Duration(max(total, 1))
		fmt.Fprintf(w, "  %d aggregator(s): stored %d batches (%d failed) in %v: %.0f batches/s in all, per aggregator %s batches/s\n",
			aggs, total, r.failed, r.elapsed.Round(time.Millisecond), float64(total)/r.elapsed.Seconds(), strings.Join(per, " and "))
		// Other work on a shared machine takes cores from the run: CPU per
		// batch (clients included) is the figure that does not move with it.
		fmt.Fprintf(w, "    process CPU %.0f us/batch, clients included (all %d CPUs at that cost: %.0f batches/s); load average at the end: %s\n",
			float64(cpu.Microseconds()), runtime.NumCPU(), float64(runtime.NumCPU())*float64(time.Second)/float64(cpu), strings.TrimSpace(r.load))
		// Every sample of the run is within memory_window, so this is the
		// in-memory view at its fullest: the cost of the window, per
		// million samples it holds.
		fmt.Fprintf(w, "    heap held by the aggregator(s) after the run %.1f MiB for %.0f stored samples: %.1f MiB per million stored samples\n",
			float64(r.heap)/(1<<20), samples, float64(r.heap)/(1<<20)/max(samples/1e6, 1e-9))
	}
	return nil
}

type ingestResult struct {
	stored  []int64 // batches acknowledged, per aggregator
	failed  int64
	elapsed time.Duration
	cpu     time.Duration // process CPU, clients included
	heap    int64         // live heap the aggregators added
	load    string
}

// ingestRun starts aggs aggregators, each with its own data directory,
// and has node n post its frames to aggregator n%aggs for dur.
func ingestRun(aggs int, tokens map[string]string, frames [][][]byte, dur time.Duration) (ingestResult, error) {
	var r ingestResult
	base := heapBytes()
	var addrs, dirs []string
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
		for _, dir := range dirs {
			os.RemoveAll(dir)
		}
	}()
	for range aggs {
		dir, err := os.MkdirTemp("", "perigee-bench-agg")
		if err != nil {
			return r, err
		}
		dirs = append(dirs, dir)
		srv, err := aggregator.NewServer(aggregator.Config{Listen: "127.0.0.1:0", DataDir: dir, Tokens: tokens}, slog.New(slog.DiscardHandler))
		if err != nil {
			return r, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		stops = append(stops, func() { cancel(); <-done })
		addrs = append(addrs, srv.Addr())
	}
	clients := make([]*http.Client, aggs)
	for i := range clients {
		clients[i] = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true, MaxConnsPerHost: 8}}
	}
	stored := make([]atomic.Int64, aggs)
	var failed atomic.Int64
	cpu0, _ := telemetry.ReadProcessUsage()
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for n := range frames {
		wg.Go(func() {
			a := n % aggs
			tok := tokens[fmt.Sprintf("node-%03d", n)]
			for _, f := range frames[n] {
				if time.Now().After(deadline) {
					return
				}
				req, _ := http.NewRequest(http.MethodPost, "https://"+addrs[a]+ship.IngestPath, bytes.NewReader(f))
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := clients[a].Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					stored[a].Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	cpu1, _ := telemetry.ReadProcessUsage()
	r.cpu = cpu1.CPU - cpu0.CPU
	r.load = machine.LoadAvg()
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	r.heap = heapBytes() - base
	for i := range stored {
		r.stored = append(r.stored, stored[i].Load())
	}
	r.failed = failed.Load()
	return r, nil
}

// restart fills a store with half the stored samples and then with all of
// them (100 nodes, 5 samples a batch, a batch every 10.8 s per node: 6
// hours per million samples, segments aged as time would age them), and
// starts an aggregator on each twice: without a dedup checkpoint or rollup
// files (the first start after an upgrade) and with them. It reports the
// time until the aggregator listens, how long the background work after it
// took (warming the fleet view, rolling up every segment on the first
// start), and the heap then held: per million stored samples, and what the
// second million added.
func restart(w io.Writer, stored int) error {
	fmt.Fprintf(w, "Restart and memory, 100 nodes, 5 samples a batch, memory_window %v\n", aggregator.DefaultMemoryWindow)
	var heaps []float64
	sizes := []int{stored / 2, stored}
	for _, size := range sizes {
		held, err := restartOver(w, size)
		if err != nil {
			return err
		}
		heaps = append(heaps, held)
	}
	fmt.Fprintf(w, "  heap per million stored samples: %.1f MiB at %d, %.1f MiB at %d; the second %d samples added %.1f MiB\n\n",
		heaps[0]/(float64(sizes[0])/1e6), sizes[0], heaps[1]/(float64(sizes[1])/1e6), sizes[1], sizes[1]-sizes[0], heaps[1]-heaps[0])
	return nil
}

// restartOver runs the two starts over a store of stored samples and
// returns the heap (MiB) the second start held.
func restartOver(w io.Writer, stored int) (float64, error) {
	dir, err := os.MkdirTemp("", "perigee-bench-restart-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	const nodes, perBatch = 100, 5
	batches := max(stored/perBatch/nodes, 1)
	log := slog.New(slog.DiscardHandler)
	st, err := store.Open(dir+"/store", store.Options{SegmentBytes: 4 << 20}, log)
	if err != nil {
		return 0, err
	}
	sealer, err := wire.NewSealer(wire.CodecZstd, wire.DefaultLevel)
	if err != nil {
		return 0, err
	}
	var h telemetry.Histogram
	for i := range 100 {
		h.Observe(time.Duration(i) * 200 * time.Microsecond)
	}
	span := time.Duration(float64(6*time.Hour) * float64(stored) / 1e6)
	start := time.Now().Add(-span)
	type rec struct {
		at    time.Time
		frame []byte
	}
	recs := make(chan rec, 64)
	var wg sync.WaitGroup
	var appendErr atomic.Value
	var mu sync.Mutex
	newest := map[uint64]time.Time{} // per segment, what its modification time must say
	// Concurrent appends share fsyncs.
	for range 32 {
		wg.Go(func() {
			for r := range recs {
				seg, err := st.Append(r.at, r.frame)
				if err != nil {
					appendErr.Store(err)
				}
				mu.Lock()
				if r.at.After(newest[seg]) {
					newest[seg] = r.at
				}
				mu.Unlock()
			}
		})
	}
	for k := range batches {
		at := start.Add(time.Duration(k) * span / time.Duration(batches))
		for n := range nodes {
			b := &wire.Batch{Node: fmt.Sprintf("node-%03d", n), Seq: uint64(k + 1), Created: at}
			for j := range perBatch {
				b.Samples = append(b.Samples, telemetry.NodeSample{Node: b.Node, Region: "eu-west", Time: at.Add(time.Duration(j) * time.Second),
					RPS: 100, CPU: 0.5, Services: map[string]telemetry.ServiceSample{"api": {RPS: 50, Latency: h.Snapshot()}, "img": {RPS: 50, Latency: h.Snapshot()}}})
			}
			recs <- rec{at, sealer.Seal(b)}
		}
	}
	close(recs)
	wg.Wait()
	if err, _ := appendErr.Load().(error); err != nil {
		return 0, err
	}
	if err := st.Close(); err != nil {
		return 0, err
	}
	for _, seg := range st.Segments() {
		t := newest[seg.ID]
		if err := os.Chtimes(fmt.Sprintf("%s/store/seg-%010d.log", dir, seg.ID), t, t); err != nil {
			return 0, err
		}
	}
	segs, _ := filepath.Glob(dir + "/store/seg-*.log")
	samples := float64(batches * nodes * perBatch)
	fmt.Fprintf(w, "  %.0f stored samples (%d batches over %v, %d segments):\n", samples, batches*nodes, span.Round(time.Minute), len(segs))
	const token = "token-of-everyone-0123456789"
	var held float64
	for _, run := range []string{"first start, no checkpoint or rollups", "second start, with both"} {
		base := heapBytes()
		t0 := time.Now()
		srv, err := aggregator.NewServer(aggregator.Config{Listen: "127.0.0.1:0", DataDir: dir, Tokens: map[string]string{"*": token}}, log)
		if err != nil {
			return 0, err
		}
		listening := time.Since(t0)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		settled, err := settle(srv.Addr(), dir, len(segs))
		if err != nil {
			cancel()
			<-done
			return 0, err
		}
		held = float64(heapBytes()-base) / (1 << 20)
		cancel()
		if err := <-done; err != nil {
			return 0, err
		}
		fmt.Fprintf(w, "    %-38s listening after %8v, background work done %8v later, heap held %6.1f MiB (%.1f MiB per million stored samples)\n",
			run, listening.Round(time.Millisecond), settled.Round(time.Millisecond), held, held/(samples/1e6))
	}
	return held, nil
}

// settle waits until the aggregator at addr has warmed its fleet view and
// every one of the store's segments has its rollup files, and says how
// long that took.
func settle(addr, dir string, segments int) (time.Duration, error) {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer c.CloseIdleConnections()
	t0 := time.Now()
	for time.Since(t0) < 10*time.Minute {
		var v struct{ Warming bool }
		resp, err := c.Get("https://" + addr + "/v1/fleet")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
		}
		rolled, _ := filepath.Glob(dir + "/rollup/seg-*.10m")
		if err == nil && !v.Warming && len(rolled) >= segments {
			return time.Since(t0), nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("the aggregator did not settle within 10 minutes")
}

func heapBytes() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
