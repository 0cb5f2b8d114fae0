package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"time"
	"unsafe"

	"perigee/binread"
	"perigee/telemetry"
)

// Decoding is the part of the aggregator an attacker with a token reaches,
// so it is bounded three ways. Every count is checked against the bytes
// left divided by the smallest encoding of one record, and against a hard
// cap; everything the decoder allocates is charged to a budget the caller
// gives (the Opener gives its decompressed-size limit); and it stops at the
// first error.

// MaxRecords bounds the records of one kind in one batch. A shipper cuts
// batches well below it (see ship.Config.MaxPending).
const MaxRecords = 1 << 16

// Smaller bounds for what nests inside a record.
const (
	maxServices    = 4096 // per sample
	maxEventFields = 256
	// maxOverflowReasons bounds the thresholds one service's overflows
	// name; a node names four.
	maxOverflowReasons = 7
)

// The smallest encoding of each record: one byte per varint and string
// reference or length, eight per float.
const (
	minSampleCols  = 1 + 1 + 4 + 16 + 1            // node, region, 4 deltas, rps+cpu, service count
	minServiceCols = 1 + 16 + 4 + 3                // name, rps+error rate, 4 deltas, histogram
	minAccessCols  = 1 + 6 + 3                     // time, 6 strings, status, duration, bytes
	minSampleRow   = 2 + 1 + 1 + 8 + 1 + 8 + 1 + 1 // strings, time, window, rps, in flight, cpu, mem, count
	minServiceRow  = 1 + 16 + 2 + 2 + 2            // name, floats, 2 varints, histogram, 2 varints
	minDecision    = 1 + 8 + 8 + 2
	minEvent       = 1 + 2 + 1 // time, node and kind, field count
	minEventField  = 2
	minAccessRow   = 1 + 4 + 1 + 1 + 1 + 1 + 1
	minOverflow    = 4 // sample index, service, reason, count
	minNodeStatus  = 3 // sample index, class, count
	minSvcStatus   = 4 // sample index, service, class, count
)

// DecodePayload reads what AppendPayload wrote into bt, whose Created must
// already be set from the frame header. What the decoded records take in
// memory is charged against budget bytes; past it the payload is refused.
func DecodePayload(p []byte, bt *Batch, budget int64) error {
	base := bt.Created.UnixNano()
	d := decoder{r: newReader(p), budget: budget}
	r := d.r
	var seen [tagStatus + 1]bool
	for r.Len() > 0 && r.Err() == nil {
		tag := r.Byte("section")
		if tag == 0 || int(tag) >= len(seen) {
			return fmt.Errorf("%w: unknown section %d", ErrMalformed, tag)
		}
		if seen[tag] {
			return fmt.Errorf("%w: section %d twice", ErrMalformed, tag)
		}
		seen[tag] = true
		switch tag {
		case tagCost:
			bt.Cost = &Cost{
				BytesSent: r.Uvarint("bytes sent"), EncodeCPU: time.Duration(r.Uvarint("encode cpu")),
				DroppedBatches: r.Uvarint("dropped batches"), DroppedRecords: r.Uvarint("dropped records"),
				SpoolBytes: r.Uvarint("spool bytes"),
			}
		case tagSampleCols:
			bt.Samples = d.samples(base)
		case tagAccessCols:
			bt.Access = d.access(base)
		case tagSamples:
			bt.Samples = readRows(&d, minSampleRow, "samples", base, (*decoder).sampleRow)
		case tagDecisions:
			bt.Decisions = readRows(&d, minDecision, "decisions", base, (*decoder).decision)
		case tagEvents:
			bt.Events = readRows(&d, minEvent, "events", base, (*decoder).event)
		case tagAccess:
			bt.Access = readRows(&d, minAccessRow, "access records", base, (*decoder).accessRow)
		case tagOverflow:
			if !seen[tagSampleCols] && !seen[tagSamples] {
				r.Fail("overflows before any samples")
				break
			}
			d.overflow(bt.Samples)
		case tagStatus:
			if !seen[tagSampleCols] && !seen[tagSamples] {
				r.Fail("status classes before any samples")
				break
			}
			d.status(bt.Samples)
		}
	}
	if (seen[tagSamples] && seen[tagSampleCols]) || (seen[tagAccess] && seen[tagAccessCols]) {
		r.Fail("records both in rows and in columns")
	}
	return r.Err()
}

// decoder reads one payload: its reader, its string table and what is left
// of its memory budget.
type decoder struct {
	r        *binread.Reader
	strs     []string
	lastIPv4 uint32
	budget   int64
}

// charge takes n bytes from the budget, and fails the payload past it.
func (d *decoder) charge(n int, what string) bool {
	if d.r.Err() != nil {
		return false
	}
	if int64(n) > d.budget {
		d.r.Failf("%s: decoding needs more than the %d bytes allowed", what, d.budget)
		return false
	}
	d.budget -= int64(n)
	return true
}

// count reads a record count bounded by the bytes left, by limit, and by
// the budget for n records of type T.
func count[T any](d *decoder, minSize, limit int, what string) int {
	n := d.r.Count(minSize, limit, what)
	var zero T
	if !d.charge(n*int(unsafe.Sizeof(zero)), what) {
		return 0
	}
	return n
}

// each calls f for every index below n until the first error.
func (d *decoder) each(n int, f func(i int)) {
	for i := 0; i < n && d.r.Err() == nil; i++ {
		f(i)
	}
}

// mapBytes is what a map made for n entries allocates: its header and
// groups of eight slots, each group filled to at most seven, in a power of
// two. A map of one entry costs a whole group.
func mapBytes[K comparable, V any](n int) int {
	var k K
	var v V
	groups := 1
	for groups*7 < n {
		groups *= 2
	}
	return 64 + groups*(8+8*int(unsafe.Sizeof(k)+unsafe.Sizeof(v)))
}

func (d *decoder) string(what string) string {
	b := d.r.Bytes(maxString, what)
	if !d.charge(len(b), what) {
		return ""
	}
	return string(b)
}

func (d *decoder) str() string {
	r := d.r
	ref := r.Uvarint("string reference")
	var s string
	switch ref {
	case refText:
		s = d.string("string")
	case refIPv4:
		x := r.Uvarint("IPv4 address")
		if x > math.MaxUint32 {
			r.Fail("bad IPv4 address")
			return ""
		}
		d.lastIPv4 ^= uint32(x)
		s = netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, d.lastIPv4))).String()
	case refIPv6:
		a := r.Take(16, "IPv6 address")
		if a == nil {
			return ""
		}
		s = netip.AddrFrom16([16]byte(a)).String()
	default:
		if ref-refFirst >= uint64(len(d.strs)) {
			r.Fail("string reference past the table")
			return ""
		}
		return d.strs[ref-refFirst]
	}
	if !d.charge(len(s)+int(unsafe.Sizeof(s)), "string table") {
		return ""
	}
	d.strs = append(d.strs, s)
	return s
}

func (d *decoder) delta(prev int64) int64 { return prev + d.r.Varint("delta") }

// floats reads n XORed values as floats wrote them; set receives each
// value with its predecessor's bits undone.
func (d *decoder) floats(n int, set func(i int, x uint64)) {
	b := d.r.Take(8*n, "float column")
	if b == nil || !d.charge(8*n, "float column") {
		return
	}
	xs := make([]uint64, n)
	for shift := 56; shift >= 0; shift -= 8 {
		for i := range xs {
			xs[i] |= uint64(b[i]) << shift
		}
		b = b[n:]
	}
	for i, x := range xs {
		set(i, x)
	}
}

func xorFloat(prev float64, x uint64) float64 {
	return math.Float64frombits(math.Float64bits(prev) ^ x)
}

func (d *decoder) hist() telemetry.HistogramSnapshot {
	r := d.r
	h := telemetry.HistogramSnapshot{SumUS: r.Uvarint("histogram sum")}
	lo := r.Uvarint("histogram first bucket")
	if lo > telemetry.NumBuckets {
		r.Fail("histogram buckets out of range")
		return h
	}
	n := r.Count(1, telemetry.NumBuckets-int(lo), "histogram buckets")
	if n == 0 || !d.charge(8*(int(lo)+n), "histogram") {
		return h
	}
	h.Counts = make([]uint64, int(lo)+n)
	d.each(n, func(i int) { h.Counts[int(lo)+i] = r.Uvarint("histogram count") })
	return h
}

// rowHistogram charges and reads a histogram in AppendBinary's encoding.
func (d *decoder) rowHistogram() telemetry.HistogramSnapshot {
	h := telemetry.ReadHistogram(d.r)
	d.charge(8*len(h.Counts), "histogram")
	return h
}

func (d *decoder) samples(base int64) []telemetry.NodeSample {
	ss := make([]telemetry.NodeSample, count[telemetry.NodeSample](d, minSampleCols, MaxRecords, "samples"))
	col := func(set func(s *telemetry.NodeSample, v int64), first int64) {
		prev := first
		d.each(len(ss), func(i int) {
			prev = d.delta(prev)
			set(&ss[i], prev)
		})
	}
	d.each(len(ss), func(i int) { ss[i].Node = d.str() })
	d.each(len(ss), func(i int) { ss[i].Region = d.str() })
	col(func(s *telemetry.NodeSample, v int64) { s.Time = fromUnixNano(v) }, base)
	col(func(s *telemetry.NodeSample, v int64) { s.Window = time.Duration(v) }, 0)
	col(func(s *telemetry.NodeSample, v int64) { s.InFlight = v }, 0)
	col(func(s *telemetry.NodeSample, v int64) { s.MemBytes = uint64(v) }, 0)
	d.floats(len(ss), func(i int, x uint64) { ss[i].RPS = xorFloat(prevOf(ss, i).RPS, x) })
	d.floats(len(ss), func(i int, x uint64) { ss[i].CPU = xorFloat(prevOf(ss, i).CPU, x) })
	counts := make([]int, len(ss))
	total := 0
	d.each(len(counts), func(i int) {
		counts[i] = d.r.Count(1, maxServices, "services")
		total += counts[i]
	})
	if total > MaxRecords || total > d.r.Len()/minServiceCols {
		d.r.Failf("%d services in one batch, more than %d or than the bytes left hold", total, MaxRecords)
	}
	// Each sample's services, its map of them and the index by name the
	// next sample finds its predecessors in.
	need := total * (int(unsafe.Sizeof(flatService{})) + 8)
	for _, n := range counts {
		if n > 0 {
			need += mapBytes[string, telemetry.ServiceSample](n) + mapBytes[string, int](n)
		}
	}
	if !d.charge(need, "services") {
		return nil
	}
	// Names first, so each service finds its predecessor by name.
	fs := make([]flatService, 0, total)
	prevAt := make([]int, 0, total) // index in fs of the predecessor, or -1
	var prevIdx map[string]int
	for _, n := range counts {
		idx := make(map[string]int, n)
		d.each(n, func(int) {
			name := d.str()
			j, ok := prevIdx[name]
			if !ok {
				j = -1
			}
			idx[name] = len(fs)
			fs = append(fs, flatService{name: name})
			prevAt = append(prevAt, j)
		})
		prevIdx = idx
	}
	if d.r.Err() != nil {
		return nil
	}
	// A service new in its sample is encoded against zero, which is read
	// only: one for all, not one allocated per read.
	var none telemetry.ServiceSample
	prev := func(i int) *telemetry.ServiceSample {
		if j := prevAt[i]; j >= 0 {
			return &fs[j].v
		}
		return &none
	}
	d.floats(len(fs), func(i int, x uint64) { fs[i].v.RPS = xorFloat(prev(i).RPS, x) })
	d.floats(len(fs), func(i int, x uint64) { fs[i].v.ErrorRate = xorFloat(prev(i).ErrorRate, x) })
	d.each(len(fs), func(i int) {
		v, p := &fs[i].v, prev(i)
		v.InFlight = d.delta(p.InFlight)
		v.Queued = d.delta(p.Queued)
		v.Backends = int(d.delta(int64(p.Backends)))
		v.HealthyBackends = int(d.delta(int64(p.HealthyBackends)))
	})
	d.each(len(fs), func(i int) { fs[i].v.Latency = d.hist() })
	if d.r.Err() != nil {
		return nil
	}
	k := 0
	for i, n := range counts {
		if n > 0 {
			ss[i].Services = make(map[string]telemetry.ServiceSample, n)
		}
		for range n {
			ss[i].Services[fs[k].name] = fs[k].v
			k++
		}
	}
	return ss
}

// overflow reads the circuit overflows into the services of ss. Each must
// name a sample and a service the batch holds, a reason, a count above
// zero, and no entry twice.
func (d *decoder) overflow(ss []telemetry.NodeSample) {
	r := d.r
	// An entry allocates nothing but its service's map, charged below.
	n := r.Count(minOverflow, MaxRecords, "overflows")
	d.each(n, func(int) {
		i := r.Uvarint("overflow sample")
		svc, reason := d.str(), d.str()
		c := r.Uvarint("overflow count")
		switch {
		case r.Err() != nil:
			return
		case i >= uint64(len(ss)):
			r.Failf("overflow for sample %d of %d", i, len(ss))
			return
		case reason == "" || c == 0:
			r.Fail("overflow without a reason or a count")
			return
		}
		v, ok := ss[i].Services[svc]
		if !ok {
			r.Failf("overflow for service %q, which its sample does not hold", svc)
			return
		}
		if _, dup := v.Overflow[reason]; dup {
			r.Failf("overflow %s %s twice", svc, reason)
			return
		}
		if len(v.Overflow) == maxOverflowReasons {
			r.Failf("overflow of %s: more than %d reasons", svc, maxOverflowReasons)
			return
		}
		if v.Overflow == nil {
			if !d.charge(mapBytes[string, uint64](maxOverflowReasons), "overflow maps") {
				return
			}
			v.Overflow = make(map[string]uint64, maxOverflowReasons)
			ss[i].Services[svc] = v
		}
		v.Overflow[reason] = c
	})
}

// status reads the responses by class into ss and their services. Each
// entry must name a sample (and a service) the batch holds, a class 1..5
// and a count above zero, and no class twice. The counts land in arrays
// the samples already hold: an entry allocates nothing.
func (d *decoder) status(ss []telemetry.NodeSample) {
	r := d.r
	nodes := r.Count(minNodeStatus, MaxRecords, "node status classes")
	d.each(nodes, func(int) {
		i := r.Uvarint("status sample")
		if d.sampleIndex(i, len(ss)) {
			d.class(&ss[i].Status, nil)
		}
	})
	services := r.Count(minSvcStatus, MaxRecords, "service status classes")
	d.each(services, func(int) {
		i := r.Uvarint("status sample")
		svc := d.str()
		if !d.sampleIndex(i, len(ss)) {
			return
		}
		v, ok := ss[i].Services[svc]
		if !ok {
			r.Failf("status classes for service %q, which its sample does not hold", svc)
			return
		}
		if d.class(&v.Status, &svc) {
			ss[i].Services[svc] = v
		}
	})
}

func (d *decoder) sampleIndex(i uint64, n int) bool {
	if d.r.Err() == nil && i >= uint64(n) {
		d.r.Failf("status classes for sample %d of %d", i, n)
	}
	return d.r.Err() == nil
}

// class reads one class and its count into c, the node's or service
// svc's. (Only a refusal names them: formatting on every entry would
// allocate.)
func (d *decoder) class(c *telemetry.StatusClasses, svc *string) bool {
	r := d.r
	class, n := r.Uvarint("status class"), r.Uvarint("status count")
	of := func() string {
		if svc == nil {
			return "the node"
		}
		return fmt.Sprintf("service %q", *svc)
	}
	switch {
	case r.Err() != nil:
	case class < 1 || class > uint64(len(c)):
		r.Failf("status class %dxx of %s", class, of())
	case n == 0:
		r.Failf("status class %dxx of %s without a count", class, of())
	case c[class-1] != 0:
		r.Failf("status class %dxx of %s twice", class, of())
	default:
		c[class-1] = n
		return true
	}
	return false
}

func (d *decoder) access(base int64) []telemetry.AccessRecord {
	as := make([]telemetry.AccessRecord, count[telemetry.AccessRecord](d, minAccessCols, MaxRecords, "access records"))
	prevT := base
	d.each(len(as), func(i int) {
		prevT = d.delta(prevT)
		as[i].Time = fromUnixNano(prevT)
	})
	for _, field := range [...]func(a *telemetry.AccessRecord) *string{
		func(a *telemetry.AccessRecord) *string { return &a.Route },
		func(a *telemetry.AccessRecord) *string { return &a.Service },
		func(a *telemetry.AccessRecord) *string { return &a.Method },
		func(a *telemetry.AccessRecord) *string { return &a.Path },
		func(a *telemetry.AccessRecord) *string { return &a.Proto },
		func(a *telemetry.AccessRecord) *string { return &a.Client },
	} {
		d.each(len(as), func(i int) { *field(&as[i]) = d.str() })
	}
	prevStatus := int64(0)
	d.each(len(as), func(i int) {
		prevStatus = d.delta(prevStatus)
		as[i].Status = int(prevStatus)
	})
	d.each(len(as), func(i int) { as[i].Duration = time.Duration(d.r.Varint("duration")) })
	d.each(len(as), func(i int) { as[i].Bytes = d.r.Varint("bytes") })
	return as
}

// readRows reads a counted section of row-by-row records, the first
// payload format, which the store still holds.
func readRows[T any](d *decoder, minSize int, what string, base int64, read func(*decoder, *T, int64)) []T {
	rows := make([]T, count[T](d, minSize, MaxRecords, what))
	d.each(len(rows), func(i int) { read(d, &rows[i], base) })
	return rows
}

func (d *decoder) sampleRow(s *telemetry.NodeSample, base int64) {
	r := d.r
	s.Node = d.string("node")
	s.Region = d.string("region")
	s.Time = readTime(r, base, "sample time")
	s.Window = time.Duration(r.Varint("window"))
	s.RPS = r.Float64("rps")
	s.InFlight = r.Varint("in flight")
	s.CPU = r.Float64("cpu")
	s.MemBytes = r.Uvarint("memory")
	n := r.Count(minServiceRow, maxServices, "services")
	if n == 0 || !d.charge(mapBytes[string, telemetry.ServiceSample](n), "services") {
		return
	}
	s.Services = make(map[string]telemetry.ServiceSample, n)
	d.each(n, func(int) {
		name := d.string("service")
		var v telemetry.ServiceSample
		v.RPS = r.Float64("service rps")
		v.ErrorRate = r.Float64("error rate")
		v.InFlight = r.Varint("service in flight")
		v.Queued = r.Varint("queued")
		v.Latency = d.rowHistogram()
		v.Backends = int(r.Varint("backends"))
		v.HealthyBackends = int(r.Varint("healthy backends"))
		s.Services[name] = v
	})
}

func (d *decoder) decision(v *telemetry.Decision, base int64) {
	r := d.r
	v.Time = readTime(r, base, "decision time")
	for _, p := range [...]*string{&v.Node, &v.Region, &v.Policy, &v.Action, &v.Service, &v.Target, &v.Reason, &v.Rejected} {
		*p = d.string("decision field")
	}
	v.Value = r.Float64("decision value")
	v.Applied = readBool(r, "applied")
	v.DryRun = readBool(r, "dry run")
}

func (d *decoder) event(e *telemetry.Event, base int64) {
	e.Time = readTime(d.r, base, "event time")
	e.Node = d.string("event node")
	e.Kind = d.string("event kind")
	n := d.r.Count(minEventField, maxEventFields, "event fields")
	if n == 0 || !d.charge(mapBytes[string, string](n), "event fields") {
		return
	}
	e.Fields = make(map[string]string, n)
	d.each(n, func(int) {
		k := d.string("event field")
		e.Fields[k] = d.string("event value")
	})
}

func (d *decoder) accessRow(a *telemetry.AccessRecord, base int64) {
	r := d.r
	a.Time = readTime(r, base, "access time")
	for _, p := range [...]*string{&a.Route, &a.Service, &a.Method, &a.Path} {
		*p = d.string("access field")
	}
	a.Status = int(r.Varint("status"))
	a.Proto = d.string("proto")
	a.Duration = time.Duration(r.Varint("duration"))
	a.Bytes = r.Varint("bytes")
	a.Client = d.string("client")
}
