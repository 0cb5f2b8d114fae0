// Command telemetry measures the telemetry path at default settings: how
// small a batch gets (zstd at each level, with and without a trained
// dictionary, against gzip and no compression), what that costs a node in
// bytes per minute, and how many batches per second one aggregator ingests
// from 100 simulated nodes on this machine. It writes
// bench/results/telemetry.txt.
//
//	go run ./bench/telemetry [-out bench/results/telemetry.txt] [-ingest 10s]
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
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/dict"
	"github.com/klauspost/compress/zstd"

	"perigee/aggregator"
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
	flag.Parse()
	var report strings.Builder
	fmt.Fprintf(&report, "perigee telemetry benchmark, %s, %d CPUs, %s\n\n", time.Now().UTC().Format(time.DateOnly), runtime.NumCPU(), runtime.Version())
	if err := compression(&report); err != nil {
		fail(err)
	}
	if err := ingest(&report, *nodes, *ingestFor, *cpuProfile); err != nil {
		fail(err)
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

// ingest runs an aggregator in this process and 100 node clients posting
// pre-sealed batches as fast as it acknowledges them. Clients and server
// share the same cores, so this understates a dedicated aggregator.
func ingest(w io.Writer, nodes int, dur time.Duration, cpuProfile string) error {
	dir, err := os.MkdirTemp("", "perigee-bench-agg")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tokens := map[string]string{}
	for i := range nodes {
		tokens[fmt.Sprintf("node-%03d", i)] = fmt.Sprintf("bench-token-%03d-0123456789", i)
	}
	srv, err := aggregator.NewServer(aggregator.Config{Listen: "127.0.0.1:0", DataDir: dir, Tokens: tokens}, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true, MaxConnsPerHost: 8}}
	sealer, err := wire.NewSealer(wire.CodecZstd, wire.DefaultLevel)
	if err != nil {
		return err
	}
	// Pre-seal so the figure is the aggregator's rate, not the clients'.
	const perNode = 400
	frames := make([][][]byte, nodes)
	rng := rand.New(rand.NewPCG(3, 4))
	now := time.Now()
	for n := range nodes {
		for s := range perNode {
			frames[n] = append(frames[n], sealer.Seal(workload.Batch(rng, fmt.Sprintf("node-%03d", n), uint64(s+1), now)))
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
	var stored, failed atomic.Int64
	cpu0, _ := telemetry.ReadProcessUsage()
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for n := range nodes {
		wg.Go(func() {
			tok := tokens[fmt.Sprintf("node-%03d", n)]
			for _, f := range frames[n] {
				if time.Now().After(deadline) {
					return
				}
				req, _ := http.NewRequest(http.MethodPost, "https://"+srv.Addr()+ship.IngestPath, bytes.NewReader(f))
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					stored.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, _ := telemetry.ReadProcessUsage()
	load := machine.LoadAvg()
	fmt.Fprintf(w, "Ingest, %d simulated nodes over HTTP/2, %v, clients and aggregator on the same %d CPUs, every batch fsynced (group commit) before its 200\n",
		nodes, elapsed.Round(time.Millisecond), runtime.NumCPU())
	fmt.Fprintf(w, "  stored %d batches (%d failed): %.0f batches/s\n", stored.Load(), failed.Load(), float64(stored.Load())/elapsed.Seconds())
	// Other work on a shared machine takes cores from the run: CPU per
	// batch (clients included) is the figure that does not move with it.
	perBatch := (cpu1.CPU - cpu0.CPU) / time.Duration(max(stored.Load(), 1))
	fmt.Fprintf(w, "  process CPU %.0f us/batch, clients included (all %d CPUs at that cost: %.0f batches/s); load average at the end: %s",
		float64(perBatch.Microseconds()), runtime.NumCPU(), float64(runtime.NumCPU())*float64(time.Second)/float64(perBatch), load)
	return nil
}
