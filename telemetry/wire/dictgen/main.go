// Command dictgen trains a zstd dictionary for telemetry/wire to embed, on
// batches from the same generator the benchmark uses, with fixed seeds, time
// and zstd dictionary id. Run from telemetry/wire by go generate:
//
//	go run ./dictgen -id 1 -out dict/v1.zdict
//
// An existing dictionary is kept, never retrained: the aggregator's store
// holds frames compressed with it, and the builder of klauspost/compress
// v1.20.3 is not byte-reproducible (it walks a map into sort.Slice), so a
// retrained file would differ. A new dictionary takes a new id and file.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/klauspost/compress/dict"
	"github.com/klauspost/compress/zstd"

	"perigee/telemetry/wire"
	"perigee/telemetry/wire/workload"
)

func main() {
	id := flag.Uint("id", 1, "the dictionary id frames will carry (1..255)")
	out := flag.String("out", "dict/v1.zdict", "where to write the dictionary")
	flag.Parse()
	if err := run(*id, *out); err != nil {
		fmt.Fprintln(os.Stderr, "dictgen:", err)
		os.Exit(1)
	}
}

// maxSize keeps the committed file small.
const maxSize = 32 << 10

func run(id uint, out string) error {
	if id < 1 || id > 255 {
		return fmt.Errorf("id %d out of 1..255", id)
	}
	if _, err := os.Stat(out); err == nil {
		fmt.Printf("dictgen: %s exists, kept (shipped dictionaries never change)\n", out)
		return nil
	}
	// Several nodes, so node names do not dominate; a seed other than the
	// benchmark's, so it is not measured on what it was trained on.
	rng := rand.New(rand.NewPCG(20250601, uint64(id)))
	at := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	var train [][]byte
	for n := range 8 {
		for seq := range 50 {
			b := workload.Batch(rng, fmt.Sprintf("node-%d", n), uint64(seq+1), at.Add(time.Duration(seq)*5*time.Second))
			train = append(train, wire.AppendPayload(nil, b))
		}
	}
	d, err := dict.BuildZstdDict(train, dict.Options{
		MaxDictSize: maxSize - 512, // room for the entropy tables
		HashBytes:   6,
		// zstd's own id in the dictionary header, fixed for reproducibility;
		// "PG" in the top bytes keeps it in the private range (32768..2^31).
		ZstdDictID: 0x5047_0000 + uint32(id),
		ZstdLevel:  wire.DefaultLevel,
	})
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if len(d) > maxSize {
		return fmt.Errorf("dictionary is %d bytes, over %d", len(d), maxSize)
	}
	// A dictionary the decoder cannot load must never be committed.
	if _, err := zstd.NewReader(nil, zstd.WithDecoderDicts(d)); err != nil {
		return fmt.Errorf("trained dictionary does not load: %w", err)
	}
	return os.WriteFile(out, d, 0o644)
}
