package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/hashicorp/serf/coordinate"

	"perigee/binread"
	"perigee/telemetry"
)

// Wire messages start with a kind and a format version. A node skips a
// kind or version it does not know, and counts it (UnknownMessages),
// instead of misreading it: a fleet upgrades node by node.
const (
	kindReport     = 1  // one node's report, sent to its region
	kindState      = 2  // reports, as releases before bundles sent push/pull state
	kindBeat       = 3  // an unchanged node's refresh, sent to its region
	kindWant       = 4  // "send me your report or summary", to one node (repair.go)
	kindSummary    = 5  // a region's summary, gossiped fleet-wide (summary.go)
	kindSumBeat    = 6  // an unchanged region's refresh, gossiped
	kindBundle     = 7  // whole messages: push/pull state, repair answers
	kindLeaseAsk   = 8  // a leader asks its region to confirm it (lease.go)
	kindLeaseGrant = 9  // a member confirms its leader
	kindSumCompact = 10 // a region's summary without its member ids (summary.go)
	formatVersion  = 1

	flagLeaving = 1 << 0
	flagLeads   = 1 << 1 // the sender leads its region under Term
)

// Limits on what a report may carry. They keep one report inside a UDP
// packet and bound what a malformed message can make us allocate.
const (
	maxReportSize = 1000
	maxServices   = 64
	maxNameLen    = 64
	maxExtras     = 8
	MaxExtraKey   = 32  // bytes in a SetExtra key
	MaxExtraValue = 256 // bytes in one SetExtra value
	MaxExtraTotal = 512 // bytes over all extras of a node
	maxStateItems = 4096
)

// report is one node's versioned load summary. Within a generation the
// higher sequence wins; which generation is current, the node's metadata
// says (wireMeta), so a restart with the clock stepped back is not hidden.
type report struct {
	ID    string
	Gen   uint64 // the sender's start time, unix ns: unique per process, not ordered
	Seq   uint64 // increments with every change
	Age   time.Duration
	Term  uint64 // the highest leader term the sender knows of in its region
	Leads bool   // the sender leads its region under Term
	// Leaving is set in the last report of a node shutting down on purpose:
	// memberlist's callbacks do not tell a leave from a failure.
	Leaving bool
	Sample  telemetry.NodeSample
	Coord   *coordinate.Coordinate
	Extra   map[string][]byte
}

func (r *report) newerThan(o *report) bool {
	if r.Gen != o.Gen {
		return r.Gen > o.Gen
	}
	return r.Seq > o.Seq
}

// ageMillis is an age on the wire. A negative age, from clocks read on two
// goroutines, must not wrap around to 49 days.
func ageMillis(d time.Duration) uint32 {
	return uint32(min(max(d.Milliseconds(), 0), math.MaxUint32))
}

var errTooBig = errors.New("report exceeds the gossip size limit")

// appendReport encodes r. Floats are sent as float32: load figures do not
// need more, and it halves their size.
func appendReport(b []byte, r *report) ([]byte, error) {
	start := len(b)
	b = appendString(b, r.ID)
	b = binary.AppendUvarint(b, r.Gen)
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.BigEndian.AppendUint32(b, ageMillis(r.Age))
	b = binary.AppendUvarint(b, r.Term)
	flags := byte(0)
	if r.Leaving {
		flags |= flagLeaving
	}
	if r.Leads {
		flags |= flagLeads
	}
	b = append(b, flags)
	s := &r.Sample
	b = binary.AppendUvarint(b, uint64(max(s.Window.Milliseconds(), 0)))
	b = appendF32(b, s.RPS)
	b = binary.AppendVarint(b, s.InFlight)
	b = appendF32(b, s.CPU)
	b = binary.AppendUvarint(b, s.MemBytes)
	if r.Coord == nil {
		b = append(b, 0)
	} else {
		b = append(b, encodeCoord(r.Coord)...)
	}
	if len(s.Services) > maxServices {
		return nil, fmt.Errorf("report has %d services, at most %d fit", len(s.Services), maxServices)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Services)))
	for _, name := range slices.Sorted(maps.Keys(s.Services)) {
		v := s.Services[name]
		b = appendString(b, name)
		b = appendF32(b, v.RPS)
		b = appendF32(b, v.ErrorRate)
		b = binary.AppendVarint(b, v.InFlight)
		b = binary.AppendVarint(b, v.Queued)
		b = binary.AppendUvarint(b, uint64(max(v.Backends, 0)))
		b = binary.AppendUvarint(b, uint64(max(v.HealthyBackends, 0)))
		b = v.Latency.AppendBinary(b)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Extra)))
	for _, k := range slices.Sorted(maps.Keys(r.Extra)) {
		b = appendString(b, k)
		b = appendBytes(b, r.Extra[k])
	}
	if len(b)-start > maxReportSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", errTooBig, len(b)-start, maxReportSize)
	}
	return b, nil
}

func appendF32(b []byte, f float64) []byte {
	return binary.BigEndian.AppendUint32(b, math.Float32bits(float32(f)))
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// errMalformed marks input that came from the network and does not parse.
var errMalformed = errors.New("malformed mesh message")

// Smallest encodings, which bound a declared count by the bytes that
// follow it (binread.Reader.Count).
const (
	minReportBytes  = 24 // a one-letter id and every field at its smallest
	minServiceBytes = 14 // a one-letter name, the figures, an empty histogram
	minExtraBytes   = 3  // a one-letter key and an empty value
)

// decodeReport reads one report from the front of b and returns what follows.
func decodeReport(b []byte) (*report, []byte, error) {
	r := binread.New(b, errMalformed)
	rep := &report{}
	rep.ID = string(r.Bytes(maxNameLen, "id"))
	rep.Gen = r.Uvarint("generation")
	rep.Seq = r.Uvarint("sequence")
	if age := r.Take(4, "age"); age != nil {
		rep.Age = time.Duration(binary.BigEndian.Uint32(age)) * time.Millisecond
	}
	rep.Term = r.Uvarint("term")
	if f := r.Byte("flags"); f&^(flagLeaving|flagLeads) != 0 {
		r.Fail("unknown flags")
	} else {
		rep.Leaving, rep.Leads = f&flagLeaving != 0, f&flagLeads != 0
	}
	s := &rep.Sample
	s.Window = time.Duration(min(r.Uvarint("window"), math.MaxInt64/uint64(time.Millisecond))) * time.Millisecond
	s.RPS = figure32(r, "rps")
	s.InFlight = count(r, maxCount, "in-flight")
	s.CPU = figure32(r, "cpu")
	s.MemBytes = r.Uvarint("memory")
	if c := readCoord(r); c != nil && c.IsValid() {
		rep.Coord = c
	}
	if n := r.Count(minServiceBytes, maxServices, "services"); n > 0 {
		s.Services = make(map[string]telemetry.ServiceSample, n)
		for range n {
			name := string(r.Bytes(maxNameLen, "service name"))
			v := telemetry.ServiceSample{
				RPS:       figure32(r, "service rps"),
				ErrorRate: figure32(r, "service error rate"),
				InFlight:  count(r, maxCount, "service in-flight"),
				Queued:    count(r, maxCount, "service queued"),
			}
			if v.ErrorRate > 1 {
				r.Fail("service error rate above 1")
			}
			v.Backends = atMost(r, math.MaxInt32, "backends")
			v.HealthyBackends = atMost(r, math.MaxInt32, "healthy backends")
			if r.Err() != nil {
				return nil, nil, r.Err()
			}
			h, rest, err := telemetry.DecodeHistogram(r.Rest())
			if err != nil {
				return nil, nil, fmt.Errorf("%w: latency histogram: %w", errMalformed, err)
			}
			r = binread.New(rest, errMalformed)
			v.Latency = h
			s.Services[name] = v
		}
	}
	if n := r.Count(minExtraBytes, maxExtras, "extras"); n > 0 {
		rep.Extra = make(map[string][]byte, n)
		for range n {
			k := string(r.Bytes(MaxExtraKey, "extra key"))
			rep.Extra[k] = append([]byte(nil), r.Bytes(MaxExtraValue, "extra value")...)
		}
	}
	if r.Err() == nil && checkName("id", rep.ID) != nil {
		r.Fail("report id")
	}
	if r.Err() != nil {
		return nil, nil, r.Err()
	}
	return rep, r.Rest(), nil
}

// maxCount bounds a count in a report (requests in flight, queued), so
// that a region's sum over every member the table holds (maxPeers) stays
// far from wrapping; a million times what any node holds.
const maxCount = 1 << 40

// clampFigures puts our own figures in the range peers accept, so that a
// glitch in a gauge (in-flight read as -1, a rate of NaN or past what a
// float32 holds) never gets our report refused.
func clampFigures(s telemetry.NodeSample) telemetry.NodeSample {
	s.RPS, s.CPU, s.InFlight = clampFigure(s.RPS, math.MaxFloat32), clampFigure(s.CPU, math.MaxFloat32), min(max(s.InFlight, 0), maxCount)
	if len(s.Services) > 0 {
		out := make(map[string]telemetry.ServiceSample, len(s.Services))
		for name, v := range s.Services {
			v.RPS, v.ErrorRate = clampFigure(v.RPS, math.MaxFloat32), clampFigure(v.ErrorRate, 1)
			v.InFlight, v.Queued = min(max(v.InFlight, 0), maxCount), min(max(v.Queued, 0), maxCount)
			out[name] = v
		}
		s.Services = out
	}
	return s
}

// clampFigure puts f in [0, limit], NaN at 0: a figure a report or
// summary carries as a float32, which peers take finite and not negative.
func clampFigure(f, limit float64) float64 {
	if math.IsNaN(f) {
		return 0
	}
	return min(max(f, 0), limit)
}

// finite32 reads a load figure, which must be a number.
func finite32(r *binread.Reader, what string) float64 {
	f := r.Float32BE(what)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		r.Fail(what + " is not finite")
		return 0
	}
	return f
}

// figure32 reads a rate or an amount of load: a number, not below zero.
func figure32(r *binread.Reader, what string) float64 {
	f := finite32(r, what)
	if f < 0 {
		r.Failf("%s: %g is negative", what, f)
		return 0
	}
	return f
}

// count reads a count of things, from zero to limit.
func count(r *binread.Reader, limit int64, what string) int64 {
	n := r.Varint(what)
	if n < 0 || n > limit {
		r.Failf("%s: %d is not a count up to %d", what, n, limit)
		return 0
	}
	return n
}

// atMost reads a uvarint no larger than limit.
func atMost(r *binread.Reader, limit int, what string) int {
	n := r.Uvarint(what)
	if n > uint64(limit) {
		r.Failf("%s: %d over %d", what, n, limit)
		return 0
	}
	return int(n)
}

// encodeMessage frames reports as one gossip message or one push/pull state.
func encodeMessage(kind byte, reps []*report) ([]byte, error) {
	b := []byte{kind, formatVersion}
	if kind == kindState {
		b = binary.AppendUvarint(b, uint64(len(reps)))
	}
	for _, r := range reps {
		var err error
		if b, err = appendReport(b, r); err != nil {
			return nil, fmt.Errorf("encode report of %s: %w", r.ID, err)
		}
	}
	return b, nil
}

// decodeMessage parses a gossip message or a push/pull state. It never
// panics on any input: fuzzed in FuzzDecodeMessage.
func decodeMessage(b []byte) ([]*report, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: short header", errMalformed)
	}
	if b[1] != formatVersion {
		return nil, fmt.Errorf("%w: format version %d", errMalformed, b[1])
	}
	r := binread.New(b[2:], errMalformed)
	n := 1
	switch b[0] {
	case kindReport:
	case kindState:
		n = r.Count(minReportBytes, maxStateItems, "state")
	default:
		return nil, fmt.Errorf("%w: kind %d", errMalformed, b[0])
	}
	if r.Err() != nil {
		return nil, r.Err()
	}
	rest := r.Rest()
	reps := make([]*report, 0, n)
	for range n {
		rep, more, err := decodeReport(rest)
		if err != nil {
			return nil, err
		}
		reps, rest = append(reps, rep), more
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(rest))
	}
	return reps, nil
}

// beat says that report Seq of a node carries the same figures as its
// report Base. An unchanged node refreshes its age with a beat instead of a
// full report: a tenth of the bytes, which is what keeps refreshes within
// budget at a few hundred nodes.
type beat struct {
	ID             string
	Gen, Seq, Base uint64
	Age            time.Duration
}

// encodeBeat puts the age last, where broadcast patches it.
func encodeBeat(bt beat) []byte {
	b := []byte{kindBeat, formatVersion}
	b = appendString(b, bt.ID)
	return appendBeatTail(b, bt.Gen, bt.Seq, bt.Base, bt.Age)
}

// appendBeatTail writes what every beat ends with: generation, sequence,
// how far back its base is, and the age last, where broadcast patches it.
func appendBeatTail(b []byte, gen, seq, base uint64, age time.Duration) []byte {
	b = binary.AppendUvarint(b, gen)
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendUvarint(b, seq-base)
	return binary.BigEndian.AppendUint32(b, ageMillis(age))
}

// readBeatTail reads what appendBeatTail wrote.
func readBeatTail(r *binread.Reader) (gen, seq, base uint64, age time.Duration) {
	gen = r.Uvarint("generation")
	seq = r.Uvarint("sequence")
	if back := r.Uvarint("base"); back <= seq {
		base = seq - back
	} else {
		r.Fail("base after sequence")
	}
	if a := r.Take(4, "age"); a != nil {
		age = time.Duration(binary.BigEndian.Uint32(a)) * time.Millisecond
	}
	return gen, seq, base, age
}

// decodeBeat parses a beat. It never panics on any input: fuzzed in
// FuzzDecodeBeat.
func decodeBeat(b []byte) (beat, error) {
	if len(b) < 2 || b[0] != kindBeat || b[1] != formatVersion {
		return beat{}, fmt.Errorf("%w: not a beat", errMalformed)
	}
	r := binread.New(b[2:], errMalformed)
	bt := beat{ID: string(r.Bytes(maxNameLen, "id"))}
	bt.Gen, bt.Seq, bt.Base, bt.Age = readBeatTail(r)
	r.End()
	if r.Err() == nil && checkName("id", bt.ID) != nil {
		r.Fail("beat id")
	}
	return bt, r.Err()
}

// encodeWant asks a node for its report, naming the asker.
func encodeWant(from string) []byte {
	return appendString([]byte{kindWant, formatVersion}, from)
}

// decodeWant parses a want. It never panics on any input: fuzzed in
// FuzzDecodeWant.
func decodeWant(b []byte) (string, error) {
	if len(b) < 2 || b[0] != kindWant || b[1] != formatVersion {
		return "", fmt.Errorf("%w: not a want", errMalformed)
	}
	r := binread.New(b[2:], errMalformed)
	from := string(r.Bytes(maxNameLen, "asker"))
	r.End()
	if r.Err() == nil && checkName("id", from) != nil {
		r.Fail("asker id")
	}
	return from, r.Err()
}
