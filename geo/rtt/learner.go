// Package rtt learns how long real round trips to clients take: each node
// records the smoothed RTT of its own connections per client network and per
// geo cell, gossips a compact summary, and answers what it and its peers have
// measured for a client.
package rtt

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"perigee/binread"
	"perigee/geo/internal/clientnet"
	"perigee/geo/internal/shardcache"
)

// Cell is a 2°×2° patch of the map (about 220 km at the equator): clients of
// one cell usually share their paths to a PoP, so a measurement of one
// network informs its neighbours that have not been measured yet.
type Cell uint16

// NoCell stands for an unknown location.
const NoCell Cell = math.MaxUint16

// CellOf returns the cell holding a coordinate, or NoCell for one that is
// not a number (coordinates come from database files).
func CellOf(lat, lon float64) Cell {
	if math.IsNaN(lat) || math.IsNaN(lon) {
		return NoCell
	}
	row := int(math.Floor((min(max(lat, -90), 89.999) + 90) / 2))
	col := int(math.Floor((min(max(lon, -180), 179.999) + 180) / 2))
	return Cell(row*180 + col)
}

// Scopes of an estimate.
const (
	ScopeNetwork = "network"
	ScopeCell    = "cell"
)

// Estimate is what has been measured between a client and a node.
type Estimate struct {
	RTT     time.Duration
	Samples int
	Scope   string
}

// Config sets up a Learner.
type Config struct {
	Self string // the node this learner measures for
	// Locate places a client for the per-cell figures; nil keeps only
	// per-network figures.
	Locate func(netip.Addr) (lat, lon float64, ok bool)
	// MaxAge forgets measurements not refreshed for this long (default 10m),
	// so a path that was slow once gets measured again.
	MaxAge time.Duration
	// SummaryBytes bounds one gossip summary (default 1024).
	SummaryBytes int
	// Entries bounds the local tables (default 16384 networks).
	Entries int
	Now     func() time.Time // for tests; default time.Now
}

// Learner holds this node's measurements and the summaries of its peers.
type Learner struct {
	cfg    Config
	nets   *shardcache.Cache[netip.Prefix, stat]
	cells  *shardcache.Cache[Cell, stat]
	mu     sync.Mutex // serialises Merge's copy-on-write of remote
	remote atomic.Pointer[map[string]*peer]
}

// stat is a smoothed RTT in microseconds over n samples.
type stat struct {
	us   float64
	n    uint32
	last int64 // unix nanoseconds of the latest sample
	fed  int64 // of a network: when it last fed its cell
}

// cellEvery is how often one network's samples may feed its cell: as one
// connection is sampled at most every 10 s, so a client opening
// connections by the hundred (whose RTTs it controls) weighs in its cell
// as one network, not as hundreds.
const cellEvery = 10 * time.Second

// peer is one other node's latest summary, read without locks.
type peer struct {
	received time.Time
	nets     map[netip.Prefix]stat
	cells    map[Cell]stat
}

// NewLearner returns a learner for cfg.Self.
func NewLearner(cfg Config) *Learner {
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 10 * time.Minute
	}
	if cfg.SummaryBytes <= 0 {
		cfg.SummaryBytes = 1024
	}
	if cfg.Entries <= 0 {
		cfg.Entries = 16384
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Learner{
		cfg:   cfg,
		nets:  shardcache.New[netip.Prefix, stat](cfg.Entries),
		cells: shardcache.New[Cell, stat](cfg.Entries / 4),
	}
	l.remote.Store(&map[string]*peer{})
	return l
}

// Self is the node this learner measures for.
func (l *Learner) Self() string { return l.cfg.Self }

// smoothing is the weight of a new sample once a few are in, as TCP's SRTT
// uses; the first samples are averaged so one outlier cannot dominate.
const smoothing = 1.0 / 8

// maxRTT is the longest round trip believed, measured here or in a
// peer's summary. A client controls what its connection shows (it can hold
// back ACKs, or echo an old TCP timestamp), and no real path takes longer.
const maxRTT = time.Minute

// Observe records one smoothed RTT this node measured to client. One over
// maxRTT is dropped: peers would refuse the summary that carried it.
func (l *Learner) Observe(client netip.Addr, d time.Duration) {
	if d <= 0 || d > maxRTT || !client.IsValid() {
		return
	}
	now := l.cfg.Now().UnixNano()
	us := float64(d) / float64(time.Microsecond)
	add := func(old stat, found bool) stat {
		if !found || now-old.last > int64(l.cfg.MaxAge) {
			return stat{us: us, n: 1, last: now}
		}
		n := old.n + 1
		w := max(1/float64(n), smoothing)
		return stat{us: old.us + w*(us-old.us), n: min(n, math.MaxUint16), last: now}
	}
	feed := false
	l.nets.Update(clientnet.Of(client), func(old stat, found bool) stat {
		s := add(old, found)
		if s.fed = old.fed; !found || now-old.fed >= int64(cellEvery) {
			s.fed, feed = now, true
		}
		return s
	})
	if feed && l.cfg.Locate != nil {
		if lat, lon, ok := l.cfg.Locate(client); ok {
			l.cells.Update(CellOf(lat, lon), add)
		}
	}
}

// Estimate returns what node measured for the client network, or else for
// its cell. now is passed in so a decision over many nodes reads the clock
// once.
func (l *Learner) Estimate(network netip.Prefix, cell Cell, node string, now time.Time) (Estimate, bool) {
	if node == l.cfg.Self {
		cutoff := now.Add(-l.cfg.MaxAge).UnixNano()
		if s, ok := l.nets.Get(network); ok && s.last >= cutoff {
			return s.estimate(ScopeNetwork), true
		}
		if cell != NoCell {
			if s, ok := l.cells.Get(cell); ok && s.last >= cutoff {
				return s.estimate(ScopeCell), true
			}
		}
		return Estimate{}, false
	}
	p := (*l.remote.Load())[node]
	if p == nil || now.Sub(p.received) > l.cfg.MaxAge {
		return Estimate{}, false
	}
	if s, ok := p.nets[network]; ok {
		return s.estimate(ScopeNetwork), true
	}
	if s, ok := p.cells[cell]; ok && cell != NoCell {
		return s.estimate(ScopeCell), true
	}
	return Estimate{}, false
}

// Shares reports whether a fresh summary of node is held: summaries go
// both ways between the nodes that gossip them (a mesh region), so node
// then holds this one's measurements too.
func (l *Learner) Shares(node string, now time.Time) bool {
	p := (*l.remote.Load())[node]
	return p != nil && now.Sub(p.received) <= l.cfg.MaxAge
}

func (s stat) estimate(scope string) Estimate {
	return Estimate{RTT: time.Duration(s.us * float64(time.Microsecond)), Samples: int(s.n), Scope: scope}
}

// Summary wire format, version 1:
//
//	'R' 1
//	uvarint count, then per network: family byte 4 or 6, the 3 or 6
//	    network bytes, uvarint RTT in units of 100µs, uvarint samples
//	uvarint count, then per cell: uvarint cell, uvarint RTT, uvarint samples
//
// Best-sampled entries go first and the rest are dropped at the size bound.
const (
	summaryMagic   = 'R'
	summaryVersion = 1
	rttUnit        = 100 * time.Microsecond
)

type netEntry struct {
	p netip.Prefix
	s stat
}

type cellEntry struct {
	c Cell
	s stat
}

// Summary encodes this node's fresh measurements for gossip.
func (l *Learner) Summary() []byte {
	cutoff := l.cfg.Now().Add(-l.cfg.MaxAge).UnixNano()
	var nets []netEntry
	l.nets.Range(func(p netip.Prefix, s stat) bool {
		if s.last >= cutoff {
			nets = append(nets, netEntry{p, s})
		}
		return true
	})
	var cells []cellEntry
	l.cells.Range(func(c Cell, s stat) bool {
		if s.last >= cutoff {
			cells = append(cells, cellEntry{c, s})
		}
		return true
	})
	bySamples := func(a, b stat) int { return cmp.Compare(b.n, a.n) }
	slices.SortFunc(nets, func(a, b netEntry) int { return bySamples(a.s, b.s) })
	slices.SortFunc(cells, func(a, b cellEntry) int { return bySamples(a.s, b.s) })

	// Cells are few and cover many networks: reserve room for them first.
	var cellBuf []byte
	nCells := 0
	for _, e := range cells {
		next := appendStat(binary.AppendUvarint(cellBuf, uint64(e.c)), e.s)
		if len(next) > l.cfg.SummaryBytes/4 {
			break
		}
		cellBuf, nCells = next, nCells+1
	}
	budget := l.cfg.SummaryBytes - len(cellBuf) - 2*binary.MaxVarintLen16 - 2
	var netBuf []byte
	nNets := 0
	for _, e := range nets {
		next := appendNetwork(netBuf, e.p)
		next = appendStat(next, e.s)
		if len(next) > budget {
			break
		}
		netBuf, nNets = next, nNets+1
	}
	out := []byte{summaryMagic, summaryVersion}
	out = binary.AppendUvarint(out, uint64(nNets))
	out = append(out, netBuf...)
	out = binary.AppendUvarint(out, uint64(nCells))
	return append(out, cellBuf...)
}

func appendNetwork(b []byte, p netip.Prefix) []byte {
	a := p.Addr()
	if a.Is4() {
		v := a.As4()
		return append(append(b, 4), v[:3]...)
	}
	v := a.As16()
	return append(append(b, 6), v[:6]...)
}

func appendStat(b []byte, s stat) []byte {
	// Loopback round trips are below one unit; zero would read as no data.
	units := max(1, math.Round(s.us*float64(time.Microsecond)/float64(rttUnit)))
	b = binary.AppendUvarint(b, uint64(units))
	return binary.AppendUvarint(b, uint64(s.n))
}

// Merge replaces what is known of node's measurements by its summary. An
// empty summary forgets the node. The learner's own summaries are ignored.
func (l *Learner) Merge(node string, summary []byte) error {
	if node == l.cfg.Self {
		return nil
	}
	var p *peer
	if len(summary) > 0 {
		var err error
		if p, err = decodeSummary(summary); err != nil {
			return fmt.Errorf("rtt summary from %s: %w", node, err)
		}
		p.received = l.cfg.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.remote.Load()
	next := make(map[string]*peer, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	if p == nil {
		delete(next, node)
	} else {
		next[node] = p
	}
	l.remote.Store(&next)
	return nil
}

// Peers lists the nodes whose summaries are held, sorted.
func (l *Learner) Peers() []string {
	m := *l.remote.Load()
	out := make([]string, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Retain forgets every peer that is not among members, and every peer whose
// latest summary is older than MaxAge (it has nothing left to say): the
// mesh forgets departed nodes, and the learner must not keep their
// summaries forever. It returns how many peers were forgotten.
func (l *Learner) Retain(members []string) int {
	keep := make(map[string]bool, len(members))
	for _, m := range members {
		keep[m] = true
	}
	cutoff := l.cfg.Now().Add(-l.cfg.MaxAge)
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.remote.Load()
	next := make(map[string]*peer, min(len(old), len(members)))
	for id, p := range old {
		if keep[id] && !p.received.Before(cutoff) {
			next[id] = p
		}
	}
	if len(next) == len(old) {
		return 0
	}
	l.remote.Store(&next)
	return len(old) - len(next)
}

// maxSummary refuses summaries far beyond any sane size before decoding.
const maxSummary = 64 << 10

// ErrMalformed is wrapped by every error a summary that cannot be decoded
// gives.
var ErrMalformed = errors.New("malformed rtt summary")

func decodeSummary(b []byte) (*peer, error) {
	if len(b) > maxSummary {
		return nil, fmt.Errorf("%w: %d bytes is over the %d byte limit", ErrMalformed, len(b), maxSummary)
	}
	if len(b) < 2 || b[0] != summaryMagic {
		return nil, fmt.Errorf("%w: not a summary", ErrMalformed)
	}
	if b[1] != summaryVersion {
		return nil, fmt.Errorf("%w: unknown version %d", ErrMalformed, b[1])
	}
	r := binread.New(b[2:], ErrMalformed)
	n := r.Count(6, maxSummary, "networks")
	p := &peer{nets: make(map[netip.Prefix]stat, n)}
	for range n {
		var pfx netip.Prefix
		switch r.Byte("address family") {
		case 4:
			var a [4]byte
			copy(a[:3], r.Take(3, "IPv4 network"))
			pfx = netip.PrefixFrom(netip.AddrFrom4(a), 24)
		case 6:
			var a [16]byte
			copy(a[:6], r.Take(6, "IPv6 network"))
			pfx = netip.PrefixFrom(netip.AddrFrom16(a), 48)
		default:
			r.Fail("bad address family")
		}
		s := readStat(r)
		if r.Err() != nil {
			return nil, r.Err()
		}
		p.nets[pfx] = s
	}
	n = r.Count(3, maxSummary, "cells")
	p.cells = make(map[Cell]stat, n)
	for range n {
		c := r.Uvarint("cell")
		s := readStat(r)
		if r.Err() == nil && c >= uint64(NoCell) {
			r.Failf("cell %d out of range", c)
		}
		if r.Err() != nil {
			return nil, r.Err()
		}
		p.cells[Cell(c)] = s
	}
	r.End()
	return p, r.Err()
}

// readStat reads one measurement and refuses an implausible one.
func readStat(r *binread.Reader) stat {
	rtt := r.Uvarint("RTT")
	n := r.Uvarint("samples")
	if r.Err() == nil && (rtt == 0 || rtt > uint64(maxRTT/rttUnit) || n == 0 || n > math.MaxUint16) {
		r.Failf("implausible measurement: %d×100µs over %d samples", rtt, n)
	}
	return stat{us: float64(rtt) * float64(rttUnit/time.Microsecond), n: uint32(n)}
}
