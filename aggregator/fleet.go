package aggregator

import (
	"cmp"
	"maps"
	"math"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// fleet is the in-memory view of the recent past: per-node samples of the
// last window, and the latest decisions and events. It is rebuilt from the
// store at start by reading that window only; older queries read the store
// (see history.go). The store is the truth; this is a cache of its tail.
type fleet struct {
	window    time.Duration // samples older than this before a node's newest are dropped
	mu        sync.RWMutex
	nodes     map[string]*nodeState
	decisions history[telemetry.Decision] // arrival order
	events    history[telemetry.Event]
}

// Memory bounds for the history kept for queries; the store keeps all.
// Each string of a record may be up to a MiB, so the count alone would let
// one node fill gigabytes: the bytes they hold are bounded too, far above
// what real records (a few hundred bytes) take.
const (
	maxDecisions    = 10_000
	maxEvents       = 10_000
	maxHistoryBytes = 16 << 20 // of each kind
)

// history is the latest records of one kind, in arrival order, at most max
// of them and, but for the newest, maxHistoryBytes of their strings.
type history[T any] struct {
	items []T
	bytes int
	max   int
	size  func(*T) int
	time  func(*T) time.Time
}

func (h *history[T]) add(v T) {
	h.items = append(h.items, v)
	h.bytes += h.size(&v)
}

// trim drops the oldest past the bounds.
func (h *history[T]) trim() {
	cut := 0
	for cut < len(h.items)-1 && (len(h.items)-cut > h.max || h.bytes > maxHistoryBytes) {
		h.bytes -= h.size(&h.items[cut])
		cut++
	}
	h.items = slices.Delete(h.items, 0, cut)
}

// pruneBefore drops the records before cutoff at the start of the list.
func (h *history[T]) pruneBefore(cutoff time.Time) {
	cut := 0
	for cut < len(h.items) && h.time(&h.items[cut]).Before(cutoff) {
		h.bytes -= h.size(&h.items[cut])
		cut++
	}
	h.items = slices.Delete(h.items, 0, cut)
}

// What a decision or an event holds: its struct and its strings, as they
// take memory or, if more, as the answers write them (jsonLen).
func decisionSize(d *telemetry.Decision) int {
	return int(unsafe.Sizeof(*d)) + jsonLen(d.Node) + jsonLen(d.Region) + jsonLen(d.Policy) + jsonLen(d.Action) +
		jsonLen(d.Service) + jsonLen(d.Target) + jsonLen(d.Reason) + jsonLen(d.Rejected)
}

func eventSize(e *telemetry.Event) int {
	n := int(unsafe.Sizeof(*e)) + jsonLen(e.Node) + jsonLen(e.Kind)
	for k, v := range e.Fields {
		n += 2*int(unsafe.Sizeof(k)) + jsonLen(k) + jsonLen(v)
	}
	return n
}

// jsonLen is the bytes encoding/json writes for s, quotes left out, or a
// few more, and never less than len(s): 6 for a byte it escapes as \u00XX
// or \ufffd (<, >, &, a control byte, a byte of bad UTF-8) and for U+2028
// and U+2029, 2 for " and \, else the bytes of s. The view's bounds bound
// its answers so: a string of < is six times its length in an answer.
func jsonLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"' || r == '\\':
			n += 2
		case r < 0x20 || r == '<' || r == '>' || r == '&' || r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}

type nodeState struct {
	region   string
	lastSeen time.Time // when its last batch arrived
	last     point
	points   []point // time order, the last window
	bytes    int     // what points hold, pointSize each
	cost     wire.Cost
	costAt   time.Time
	costRate float64       // telemetry bytes/s, from the last two batches
	access   uint64        // sampled access records received
	skew     time.Duration // node clock minus arrival, at its last batch
}

// point is one node sample reduced to what the queries read.
type point struct {
	T        time.Time
	RPS      float64
	CPU      float64
	ErrRate  float64
	InFlight int64
	Mem      uint64
	Healthy  int
	Backends int
	Latency  hist
	Overflow []Overflow // nil when the sample has none
	// Status is the node's responses per second by class, when the sample
	// carries them (nodes from before they did send none).
	Status    ClassRates
	HasStatus bool
}

// overflow sums the circuit overflows of the samples held, by service
// and reason, in that order.
func (n *nodeState) overflow() []Overflow {
	type key struct{ service, reason string }
	sum := map[key]uint64{}
	for _, p := range n.points {
		for _, o := range p.Overflow {
			sum[key{o.Service, o.Reason}] += o.Count
		}
	}
	out := make([]Overflow, 0, len(sum))
	for k, c := range sum {
		out = append(out, Overflow{Service: k.service, Reason: k.reason, Count: c})
	}
	slices.SortFunc(out, func(a, b Overflow) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Reason, b.Reason))
	})
	return out
}

// hist is a latency histogram as the fleet view holds it, every sample of
// the memory window: the counts from the first non-zero bucket to the last,
// in 32 bits, which takes a half to a quarter of a snapshot's memory. (A
// bucket of one sample's window would need 4 billion requests to
// saturate.)
type hist struct {
	first  uint16
	counts []uint32
	sumUS  uint64
}

func compact(s telemetry.HistogramSnapshot) hist {
	lo, hi := 0, len(s.Counts)
	for lo < hi && s.Counts[lo] == 0 {
		lo++
	}
	for hi > lo && s.Counts[hi-1] == 0 {
		hi--
	}
	h := hist{first: uint16(lo), sumUS: s.SumUS}
	if hi > lo {
		h.counts = make([]uint32, hi-lo)
		for i, c := range s.Counts[lo:hi] {
			h.counts[i] = uint32(min(c, math.MaxUint32))
		}
	}
	return h
}

// addTo adds h's counts into s.
func (h hist) addTo(s *telemetry.HistogramSnapshot) {
	if need := int(h.first) + len(h.counts); len(s.Counts) < need {
		s.Counts = append(s.Counts, make([]uint64, need-len(s.Counts))...)
	}
	for i, c := range h.counts {
		s.Counts[int(h.first)+i] += uint64(c)
	}
	s.SumUS += h.sumUS
}

// maxPoints bounds the samples kept per node: four a second over the
// window (a node samples once a second), at least 10,000. A node sending
// more, which no real one does, keeps its newest.
func (f *fleet) maxPoints() int {
	return max(10_000, int(4*f.window/time.Second))
}

// pointBytes is the average a node's points may take: a real one takes a
// few hundred bytes, but one naming the services that overflowed may take
// megabytes (a name on the wire may be a MiB).
const pointBytes = 2 << 10

// pointSize is what p holds in memory, its strings as answers write them.
func pointSize(p *point) int {
	n := int(unsafe.Sizeof(*p)) + 4*len(p.Latency.counts)
	for _, o := range p.Overflow {
		n += int(unsafe.Sizeof(o)) + jsonLen(o.Service) + jsonLen(o.Reason)
	}
	return n
}

// dropBefore drops n's points before index cut, then its oldest while it
// holds more than maxPoints of them or pointBytes each on average; the
// newest is always kept.
func (n *nodeState) dropBefore(cut, maxPoints int) {
	for i := range cut {
		n.bytes -= pointSize(&n.points[i])
	}
	for cut < len(n.points)-1 && (len(n.points)-cut > maxPoints || n.bytes > maxPoints*pointBytes) {
		n.bytes -= pointSize(&n.points[cut])
		cut++
	}
	n.points = slices.Delete(n.points, 0, cut)
}

func newFleet(window time.Duration) *fleet {
	return &fleet{window: window, nodes: map[string]*nodeState{},
		decisions: history[telemetry.Decision]{max: maxDecisions, size: decisionSize, time: func(d *telemetry.Decision) time.Time { return d.Time }},
		events:    history[telemetry.Event]{max: maxEvents, size: eventSize, time: func(e *telemetry.Event) time.Time { return e.Time }}}
}

func (f *fleet) node(name string) *nodeState {
	n := f.nodes[name]
	if n == nil {
		n = &nodeState{}
		f.nodes[name] = n
	}
	return n
}

// apply folds a stored batch into the view. Replay at start calls it too,
// in store order, with the time each batch was received. skew is how far
// ahead the node's clock was (see restamp).
func (f *fleet) apply(b *wire.Batch, received time.Time, skew time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.node(b.Node)
	if !received.Before(n.lastSeen) {
		n.lastSeen = received
		n.skew = skew
	}
	fresh := make([]point, len(b.Samples))
	for i := range b.Samples {
		s := &b.Samples[i]
		if s.Region != "" {
			n.region = s.Region
		}
		fresh[i] = reduce(s)
		n.bytes += pointSize(&fresh[i])
	}
	// A node sends its samples in time order, but a forged batch may hold
	// them in any: sorted and merged, it costs n log n, where inserting
	// each in place moved every point held, n² (minutes for one frame).
	slices.SortStableFunc(fresh, func(a, b point) int { return a.T.Compare(b.T) })
	n.points = mergePoints(n.points, fresh)
	if k := len(fresh); k > 0 && !fresh[k-1].T.Before(n.last.T) {
		n.last = fresh[k-1]
	}
	cut, _ := slices.BinarySearchFunc(n.points, n.last.T.Add(-f.window), func(p point, t time.Time) int { return p.T.Compare(t) })
	n.dropBefore(cut, f.maxPoints())
	for i := range b.Decisions {
		d := b.Decisions[i]
		d.Node = b.Node // the authenticated sender, whatever the record says
		d.Value = finiteFigure(d.Value)
		f.decisions.add(d)
	}
	f.decisions.trim()
	for i := range b.Events {
		e := b.Events[i]
		e.Node = b.Node
		f.events.add(e)
	}
	f.events.trim()
	n.access += uint64(len(b.Access))
	if c := b.Cost; c != nil {
		if dt := b.Created.Sub(n.costAt).Seconds(); !n.costAt.IsZero() && dt > 0 && c.BytesSent >= n.cost.BytesSent {
			n.costRate = float64(c.BytesSent-n.cost.BytesSent) / dt
		}
		n.cost, n.costAt = *c, b.Created
	}
}

// mergePoints merges fresh into held, both in time order; of equal times
// the held come first. Late batches from a spool land in time order.
func mergePoints(held, fresh []point) []point {
	if len(fresh) == 0 || len(held) == 0 || !fresh[0].T.Before(held[len(held)-1].T) {
		return append(held, fresh...)
	}
	out := make([]point, 0, len(held)+len(fresh))
	i, j := 0, 0
	for i < len(held) && j < len(fresh) {
		if fresh[j].T.Before(held[i].T) {
			out = append(out, fresh[j])
			j++
		} else {
			out = append(out, held[i])
			i++
		}
	}
	out = append(out, held[i:]...)
	return append(out, fresh[j:]...)
}

// maxFigure bounds the rates, core counts and ratios the view takes from a
// sample, far above any real one: a NaN, an infinity or a sum that
// overflows to one cannot be written as JSON, so one node's could make
// every answer of the API empty. Beyond the bound, or not finite, a
// figure counts as 0 in the view; the store keeps what was sent.
const maxFigure = 1e12

func finiteFigure(v float64) float64 {
	if math.IsNaN(v) || math.Abs(v) > maxFigure {
		return 0
	}
	return v
}

func reduce(s *telemetry.NodeSample) point {
	p := point{T: s.Time, RPS: finiteFigure(s.RPS), CPU: finiteFigure(s.CPU), InFlight: s.InFlight, Mem: s.MemBytes}
	var errs float64
	var svcRPS float64
	var lat telemetry.HistogramSnapshot
	for _, v := range s.Services {
		lat.Merge(v.Latency)
		errs += finiteFigure(v.ErrorRate) * finiteFigure(v.RPS)
		svcRPS += finiteFigure(v.RPS)
		p.Healthy += v.HealthyBackends
		p.Backends += v.Backends
	}
	for _, name := range slices.Sorted(maps.Keys(s.Services)) {
		of := s.Services[name].Overflow
		for _, reason := range slices.Sorted(maps.Keys(of)) {
			p.Overflow = append(p.Overflow, Overflow{Service: name, Reason: reason, Count: of[reason]})
		}
	}
	if svcRPS > 0 {
		p.ErrRate = errs / svcRPS
	}
	if secs := s.Window.Seconds(); secs > 0 && s.Status != (telemetry.StatusClasses{}) {
		for i, n := range s.Status {
			p.Status[i] = float64(n) / secs
		}
		p.HasStatus = true
	}
	p.Latency = compact(lat)
	return p
}

// prune forgets samples older than the window, and nodes, decisions and
// events older than retention.
func (f *fleet) prune(now time.Time, retention time.Duration) {
	cutoff := now.Add(-retention)
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, n := range f.nodes {
		i, _ := slices.BinarySearchFunc(n.points, now.Add(-f.window), func(p point, t time.Time) int { return p.T.Compare(t) })
		n.dropBefore(i, f.maxPoints())
		if n.lastSeen.Before(cutoff) {
			delete(f.nodes, name)
		}
	}
	f.decisions.pruneBefore(cutoff)
	f.events.pruneBefore(cutoff)
}
