package aggregator_test

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"perigee/aggregator"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// rssKiB reads this process's resident set and its peak since the last
// resetPeakRSS, from /proc.
func rssKiB(t *testing.T) (now, peak int64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			now = n
		case "VmHWM":
			peak = n
		}
	}
	return now, peak
}

func resetPeakRSS(t *testing.T) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS: %v", err)
	}
}

// frameOf wraps a raw payload in a zstd frame without a dictionary.
func frameOf(t *testing.T, seq uint64, p []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return wire.AppendFrame(nil, wire.Frame{Node: "node-a", Seq: seq, Created: time.Now(), Codec: wire.CodecZstd,
		RawLen: uint64(len(p)), Body: zw.EncodeAll(p, nil)})
}

// relabel seals b with dictionary dict and names another in the header.
func relabel(t *testing.T, b *wire.Batch, dict, label wire.DictID) []byte {
	t.Helper()
	s, err := wire.NewSealerDict(wire.CodecZstd, wire.DefaultLevel, dict)
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.ParseFrame(s.Seal(b), -1)
	if err != nil {
		t.Fatal(err)
	}
	f.Dict = label
	return wire.AppendFrame(nil, f)
}

// The frames of issue 14, posted to a real aggregator on loopback with its
// default limits: each is answered with a 4xx within a second, and the
// process's peak RSS grows by a bounded amount, even with several bombs
// in flight at once.
func TestHostileFramesAnsweredQuicklyWithBoundedMemory(t *testing.T) {
	const limit, decodes = 16 << 20, 2 // the default max_decompressed
	a := startAggregator(t, func(c *aggregator.Config) { c.MaxConcurrentIngests = decodes })
	// 16 MiB of zeros declaring 16.7 million access records: 1.8 KB on
	// the wire.
	bombRaw := binary.AppendUvarint([]byte{7}, 16_700_000)
	bombRaw = append(bombRaw, make([]byte, limit-len(bombRaw))...)
	bomb := frameOf(t, 1, bombRaw)
	if len(bomb) > 4<<10 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	good := seal(t, &wire.Batch{Node: "node-a", Seq: 2, Created: time.Now(), Samples: []telemetry.NodeSample{sample("node-a", 1)}})
	batch := func(seq uint64) *wire.Batch {
		return &wire.Batch{Node: "node-a", Seq: seq, Created: time.Now(), Samples: []telemetry.NodeSample{sample("node-a", 1)}}
	}
	forgedServices := append([]byte{6, 1, 0, 0, 0, 0, 0, 0, 0, 0}, make([]byte, 16)...)
	forgedServices = binary.AppendUvarint(forgedServices, 1<<40)
	cases := map[string]struct {
		token  string
		frame  []byte
		status int
	}{
		"bomb":                 {tokenA, bomb, 400},
		"forged sample count":  {tokenA, frameOf(t, 3, binary.AppendUvarint([]byte{6}, 1<<62)), 400},
		"forged service count": {tokenA, frameOf(t, 4, forgedServices), 400},
		"wrong dictionary":     {tokenA, relabel(t, batch(5), wire.NewestDict, 0), 400},
		"wrong token":          {"token-of-nobody-0123456789", good, 401},
	}
	for _, cut := range []int{1, 5, 8, len(good) / 2, len(good) - 5, len(good) - 1} {
		cases["truncated at "+strconv.Itoa(cut)] = struct {
			token  string
			frame  []byte
			status int
		}{tokenA, good[:cut], 400}
	}
	before, _ := rssKiB(t)
	resetPeakRSS(t)
	for name, c := range cases {
		start := time.Now()
		status, msg := post(t, a, c.token, c.frame)
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s: answered after %v", name, took)
		}
		if status != c.status {
			t.Errorf("%s: got %d %q, want %d", name, status, msg, c.status)
		}
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if status, msg := post(t, a, tokenA, bomb); status/100 != 4 {
				t.Errorf("concurrent bomb: %d %q", status, msg)
			}
		})
	}
	wg.Wait()
	_, peak := rssKiB(t)
	t.Logf("RSS before %d MiB, peak during %d MiB", before>>10, peak>>10)
	// Each ingest holds at most the body, the decompressed payload and its
	// decoded records (3 × max_decompressed); allow twice that for the
	// collector, over the decodes the aggregator runs at once.
	if bound := int64(2 * 3 * limit * decodes >> 10); peak-before > bound {
		t.Errorf("peak RSS grew by %d MiB, bound %d MiB", (peak-before)>>10, bound>>10)
	}
	// And the aggregator still takes good batches.
	if status, msg := post(t, a, tokenA, good); status != 200 {
		t.Fatalf("good batch after the attack: %d %s", status, msg)
	}
}
