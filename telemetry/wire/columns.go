package wire

import (
	"encoding/binary"
	"maps"
	"math"
	"net/netip"
	"slices"
	"time"

	"perigee/telemetry"
)

// The columnar sections (tagSampleCols, tagAccessCols) hold the records
// that repeat many times per batch. Each field is written for all records
// in turn, as the difference from the same field of the previous record
// (the first against zero, or against the batch time for timestamps), and
// strings are interned per payload, so what zstd sees is runs of small,
// alike numbers. All state starts afresh with each payload: every batch
// decodes on its own, whatever was spooled, dropped or resent before it.

// encoder carries one payload's string table.
type encoder struct {
	b        []byte
	strs     map[string]uint64
	lastIPv4 uint32
}

// String references: a new string is written in full behind refText, or
// in binary behind refIPv4/refIPv6 when it is an address in canonical form
// (client addresses, mostly); an IPv4 address as its XOR with the previous
// one, so clients of one network cost a byte or two. Any later occurrence
// of a string is refFirst + its index.
const (
	refText = iota
	refIPv4
	refIPv6
	refFirst
)

func (e *encoder) str(s string) {
	if i, ok := e.strs[s]; ok {
		e.b = binary.AppendUvarint(e.b, refFirst+i)
		return
	}
	e.strs[s] = uint64(len(e.strs))
	ip, err := netip.ParseAddr(s)
	switch {
	case err == nil && ip.Is4() && ip.String() == s:
		v := binary.BigEndian.Uint32(ip.AsSlice())
		e.b = append(e.b, refIPv4)
		e.b = binary.AppendUvarint(e.b, uint64(v^e.lastIPv4))
		e.lastIPv4 = v
	case err == nil && ip.Is6() && ip.Zone() == "" && ip.String() == s:
		a := ip.As16()
		e.b = append(e.b, refIPv6)
		e.b = append(e.b, a[:]...)
	default:
		e.b = append(e.b, refText)
		e.b = appendString(e.b, s)
	}
}

func (e *encoder) delta(v, prev int64) { e.b = binary.AppendVarint(e.b, v-prev) }

// floats writes a column of n values, each XORed with its predecessor,
// as byte planes (the top byte of every value, then the next...): values of
// one column share sign, exponent and leading mantissa, so the top planes
// are runs zstd folds away, and noise stays in the bottom planes.
func (e *encoder) floats(n int, at func(i int) (v, prev float64)) {
	xs := make([]uint64, n)
	for i := range xs {
		v, prev := at(i)
		xs[i] = math.Float64bits(v) ^ math.Float64bits(prev)
	}
	for shift := 56; shift >= 0; shift -= 8 {
		for _, x := range xs {
			e.b = append(e.b, byte(x>>shift))
		}
	}
}

// hist writes a latency histogram densely from its first to its last
// non-zero bucket. Windowed histograms are independent draws, so counts
// are not delta-encoded: the difference of two such counts spreads wider
// than the counts themselves (measured in bench/telemetry).
func (e *encoder) hist(h telemetry.HistogramSnapshot) {
	lo, hi := 0, -1
	for i, c := range h.Counts {
		if c != 0 {
			if hi < 0 {
				lo = i
			}
			hi = i
		}
	}
	e.b = binary.AppendUvarint(e.b, h.SumUS)
	e.b = binary.AppendUvarint(e.b, uint64(lo))
	e.b = binary.AppendUvarint(e.b, uint64(hi+1-lo))
	for _, c := range h.Counts[lo : hi+1] {
		e.b = binary.AppendUvarint(e.b, c)
	}
}

// flatService is one service of one sample, next to the same service in
// the previous sample (zero if it had none), which it is encoded against.
type flatService struct {
	name    string
	v, prev telemetry.ServiceSample
}

func flatten(ss []telemetry.NodeSample) []flatService {
	var out []flatService
	for i := range ss {
		var prev map[string]telemetry.ServiceSample
		if i > 0 {
			prev = ss[i-1].Services
		}
		for _, name := range slices.Sorted(maps.Keys(ss[i].Services)) {
			out = append(out, flatService{name, ss[i].Services[name], prev[name]})
		}
	}
	return out
}

func (e *encoder) samples(ss []telemetry.NodeSample, base int64) {
	e.b = binary.AppendUvarint(e.b, uint64(len(ss)))
	col := func(f func(s *telemetry.NodeSample) int64, first int64) {
		prev := first
		for i := range ss {
			v := f(&ss[i])
			e.delta(v, prev)
			prev = v
		}
	}
	for i := range ss {
		e.str(ss[i].Node)
	}
	for i := range ss {
		e.str(ss[i].Region)
	}
	col(func(s *telemetry.NodeSample) int64 { return unixNano(s.Time) }, base)
	col(func(s *telemetry.NodeSample) int64 { return int64(s.Window) }, 0)
	col(func(s *telemetry.NodeSample) int64 { return s.InFlight }, 0)
	col(func(s *telemetry.NodeSample) int64 { return int64(s.MemBytes) }, 0)
	e.floats(len(ss), func(i int) (float64, float64) { return ss[i].RPS, prevOf(ss, i).RPS })
	e.floats(len(ss), func(i int) (float64, float64) { return ss[i].CPU, prevOf(ss, i).CPU })
	for i := range ss {
		e.b = binary.AppendUvarint(e.b, uint64(len(ss[i].Services)))
	}
	fs := flatten(ss)
	for _, f := range fs {
		e.str(f.name)
	}
	e.floats(len(fs), func(i int) (float64, float64) { return fs[i].v.RPS, fs[i].prev.RPS })
	e.floats(len(fs), func(i int) (float64, float64) { return fs[i].v.ErrorRate, fs[i].prev.ErrorRate })
	for _, f := range fs {
		e.delta(f.v.InFlight, f.prev.InFlight)
		e.delta(f.v.Queued, f.prev.Queued)
		e.delta(int64(f.v.Backends), int64(f.prev.Backends))
		e.delta(int64(f.v.HealthyBackends), int64(f.prev.HealthyBackends))
	}
	for _, f := range fs {
		e.hist(f.v.Latency)
	}
}

func prevOf(ss []telemetry.NodeSample, i int) telemetry.NodeSample {
	if i == 0 {
		return telemetry.NodeSample{}
	}
	return ss[i-1]
}

func (e *encoder) access(as []telemetry.AccessRecord, base int64) {
	e.b = binary.AppendUvarint(e.b, uint64(len(as)))
	prevT := base
	for i := range as {
		t := unixNano(as[i].Time)
		e.delta(t, prevT)
		prevT = t
	}
	for _, field := range [...]func(a *telemetry.AccessRecord) string{
		func(a *telemetry.AccessRecord) string { return a.Route },
		func(a *telemetry.AccessRecord) string { return a.Service },
		func(a *telemetry.AccessRecord) string { return a.Method },
		func(a *telemetry.AccessRecord) string { return a.Path },
		func(a *telemetry.AccessRecord) string { return a.Proto },
		func(a *telemetry.AccessRecord) string { return a.Client },
	} {
		for i := range as {
			e.str(field(&as[i]))
		}
	}
	prevStatus := 0
	for i := range as {
		e.delta(int64(as[i].Status), int64(prevStatus))
		prevStatus = as[i].Status
	}
	for i := range as {
		e.b = binary.AppendVarint(e.b, int64(as[i].Duration))
	}
	for i := range as {
		e.b = binary.AppendVarint(e.b, as[i].Bytes)
	}
}

// unixNano keeps the zero time distinct from 1970: it is written as the
// minimum int64, which no real timestamp uses.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return t.UnixNano()
}

func fromUnixNano(v int64) time.Time {
	if v == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, v)
}
