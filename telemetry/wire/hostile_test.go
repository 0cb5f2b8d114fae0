package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"perigee/telemetry"
)

// forged payloads: each declares far more than it holds, or asks the
// decoder to allocate far more than it carries.
func forgedPayloads(size int) map[string][]byte {
	zeros := func(tag byte, count uint64) []byte {
		p := binary.AppendUvarint([]byte{tag}, count)
		return append(p, make([]byte, size-len(p))...)
	}
	// One sample whose services each ask for a dense histogram starting
	// at the last bucket: four bytes that would allocate 2.5 KiB.
	hist := binary.AppendUvarint([]byte{tagSampleCols}, 1)
	hist = append(hist, refText, 0, refText, 0, 0, 0, 0, 0) // node, region, 4 deltas
	hist = append(hist, make([]byte, 16)...)                // rps, cpu
	services := uint64(maxServices)
	hist = binary.AppendUvarint(hist, services)
	for i := range services {
		hist = append(hist, refText)
		hist = appendString(hist, string(binary.AppendUvarint(nil, i)))
	}
	hist = append(hist, make([]byte, int(services)*16+int(services)*4)...)
	for range services {
		hist = append(hist, 0) // sum
		hist = binary.AppendUvarint(hist, telemetry.NumBuckets-1)
		hist = append(hist, 1, 1) // one bucket, count 1
	}
	return map[string][]byte{
		"access columns of zeros":   zeros(tagAccessCols, uint64(size)*99/100),
		"sample columns of zeros":   zeros(tagSampleCols, uint64(size)*99/100),
		"access rows of zeros":      zeros(tagAccess, uint64(size)*99/100),
		"decision rows of zeros":    zeros(tagDecisions, uint64(size)*99/100),
		"event rows of zeros":       zeros(tagEvents, uint64(size)*99/100),
		"access columns at the cap": zeros(tagAccessCols, MaxRecords),
		"sample columns at the cap": zeros(tagSampleCols, MaxRecords),
		"access rows at the cap":    zeros(tagAccess, MaxRecords),
		"decision rows at the cap":  zeros(tagDecisions, MaxRecords),
		"event rows at the cap":     zeros(tagEvents, MaxRecords),
		"histograms at the top":     hist,
	}
}

// allocated reports the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A payload that declares a million records in a MiB of zeros (the 1.8 KB
// bomb of issue 14, scaled down) is refused, and decoding it allocates no
// more than the decompressed-size limit allows: the body, and as much
// again for the records.
func TestOpenBoundsMemoryOfForgedCounts(t *testing.T) {
	const limit = 1 << 20
	o := mustOpener(t, limit)
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderDict(dictionaries[NewestDict]))
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range forgedPayloads(limit) {
		body := zw.EncodeAll(p, nil)
		frame := AppendFrame(nil, Frame{Node: "x", Seq: 1, Created: time.Now(), Codec: CodecZstd, Dict: NewestDict, RawLen: uint64(len(p)), Body: body})
		f, err := ParseFrame(frame, limit)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var oerr error
		used := allocated(func() { _, oerr = o.Open(f) })
		if !errors.Is(oerr, ErrMalformed) && !errors.Is(oerr, ErrTooLarge) {
			t.Errorf("%s (%d bytes compressed): got %v, want a refusal", name, len(body), oerr)
		}
		t.Logf("%s: %v, %d KiB allocated", name, oerr, used>>10)
		if used > 3*limit {
			t.Errorf("%s: decoding allocated %d KiB, bound %d KiB", name, used>>10, 3*limit>>10)
		}
	}
}

// Records that each hold a map of one entry cost a map's group of slots,
// several times what the entry does: the decoder charges them so, and the
// largest batch of such records the budget lets through allocates no more
// than about the budget.
func TestSmallMapsAreChargedTheirSize(t *testing.T) {
	const budget = 1 << 20
	for name, batch := range map[string]func(n int) *Batch{
		"a one-service map per sample": func(n int) *Batch {
			return &Batch{Samples: slices.Repeat([]telemetry.NodeSample{{Services: map[string]telemetry.ServiceSample{"a": {}}}}, n)}
		},
		"a one-field map per event": func(n int) *Batch {
			return &Batch{Events: slices.Repeat([]telemetry.Event{{Fields: map[string]string{"a": ""}}}, n)}
		},
		"an overflow map per service": func(n int) *Batch {
			s := telemetry.NodeSample{Services: map[string]telemetry.ServiceSample{}}
			for i := range n {
				s.Services[fmt.Sprint(i)] = telemetry.ServiceSample{Overflow: map[string]uint64{"max_requests": 1}}
			}
			return &Batch{Samples: []telemetry.NodeSample{s}}
		},
	} {
		// The most records the budget decodes.
		lo, hi := 1, MaxRecords
		if name == "an overflow map per service" {
			hi = maxServices
		}
		for lo < hi {
			mid := (lo + hi + 1) / 2
			if DecodePayload(AppendPayload(nil, batch(mid)), &Batch{}, budget) == nil {
				lo = mid
			} else {
				hi = mid - 1
			}
		}
		p := AppendPayload(nil, batch(lo))
		var err error
		used := allocated(func() { err = DecodePayload(p, &Batch{}, budget) })
		t.Logf("%s: %d records in %d bytes decode to %d KiB (err %v)", name, lo, len(p), used>>10, err)
		if used > budget*5/4 {
			t.Errorf("%s: %d records allocated %d KiB, budget %d KiB", name, lo, used>>10, budget>>10)
		}
	}
}

// FuzzDecode feeds arbitrary payloads to the decoder, seeded with the
// forged counts of testdata/fuzz/FuzzDecode: it must refuse or accept,
// never panic, never hold more records than MaxRecords of a kind, and never
// allocate much past its budget.
func FuzzDecode(f *testing.F) {
	const budget = 1 << 20
	f.Fuzz(func(t *testing.T, p []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		bt := &Batch{Created: time.Unix(1_700_000_000, 0)}
		err := DecodePayload(p, bt, budget)
		runtime.ReadMemStats(&after)
		if used := after.TotalAlloc - before.TotalAlloc; used > 2*budget {
			t.Fatalf("decoding %d bytes allocated %d KiB (err %v)", len(p), used>>10, err)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		for _, n := range []int{len(bt.Samples), len(bt.Access), len(bt.Decisions), len(bt.Events)} {
			if n > MaxRecords {
				t.Fatalf("%d records of one kind", n)
			}
		}
	})
}
