// Package mesh joins edge nodes into one memberlist cluster, gossips each
// node's load report, merges the reports of a region into a region view,
// elects one leader per region, and estimates RTTs between nodes with Vivaldi
// coordinates. docs/mesh.md explains the model and the settings.
package mesh

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"

	"perigee/telemetry"
)

// maxPeers bounds the member table, so a flood of made-up ids from a peer
// that holds the key cannot grow it without limit.
const maxPeers = 10000

// Cluster is this node's membership in the mesh.
type Cluster struct {
	cfg    Config
	timing Timing
	meta   NodeMeta
	log    *slog.Logger
	report func() telemetry.NodeSample
	gen    uint64

	ml      *memberlist.Memberlist
	keyring *memberlist.Keyring              // nil when gossip is not encrypted
	queue   *memberlist.TransmitLimitedQueue // reports
	beats   *memberlist.TransmitLimitedQueue // beats, sent in what room reports leave
	coords  *coordinate.Client
	events  *eventQueue
	repairs chan repair // messages for repairLoop to send

	dropped atomic.Uint64
	alive   atomic.Int32

	mu       sync.Mutex
	peers    map[string]*peer
	seq      uint64
	lastSent *report // our latest full report; beats since refer to it
	extra    map[string][]byte
	dirty    bool // extras, term, lead or leaving changed since lastSent
	leaving  bool
	term     uint64                // highest leader term known in our region
	lead     uint64                // the term we lead our region under; 0 when not leading
	roster   map[string]time.Time  // our region's members, when last eligible (leader.go)
	leaders  map[string]leaderTerm // per region, as last reported in events

	stop     chan struct{}
	wg       sync.WaitGroup
	shutdown sync.Once
}

// peer is what we know of one node, ourselves included.
type peer struct {
	meta     NodeMeta
	addr     string
	state    State  // alive, dead or left as memberlist told us
	gen      uint64 // report generation in its metadata; 0 if not told
	since    time.Time
	rep      *report
	recv     time.Time // when rep arrived, by our clock
	coord    *coordinate.Coordinate
	coordAt  time.Time
	repairAt time.Time // when we last asked this peer for the report we missed
	answerAt time.Time // when we last sent this peer our report on request
}

// Start creates the node's memberlist, then joins the seeds in the
// background, retrying until one answers. report is read every sample
// interval; it must be cheap and safe to call from another goroutine.
func Start(ctx context.Context, cfg Config, meta NodeMeta, report func() telemetry.NodeSample, log *slog.Logger) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := meta.Validate(); err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	if report == nil {
		return nil, errors.New("mesh: a report function is required")
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "mesh", "node", meta.ID)
	coords, err := newCoordClient()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg: cfg, timing: cfg.timing(), meta: meta, log: log, report: report,
		gen:     uint64(cfg.now().UnixNano()),
		coords:  coords,
		events:  newEventQueue(meta.ID, 256),
		peers:   map[string]*peer{},
		leaders: map[string]leaderTerm{},
		roster:  map[string]time.Time{},
		repairs: make(chan repair, repairQueue),
		stop:    make(chan struct{}),
	}
	mc, err := cfg.memberlistConfig(meta.ID)
	if err != nil {
		return nil, err
	}
	mc.Logger = memberlistLogger(log)
	c.keyring = mc.Keyring
	d := &delegate{c}
	mc.Delegate, mc.Events, mc.Ping = d, d, d
	c.queue = &memberlist.TransmitLimitedQueue{RetransmitMult: c.timing.RetransmitMult, NumNodes: c.numNodes}
	c.beats = &memberlist.TransmitLimitedQueue{RetransmitMult: beatRetransmitMult, NumNodes: c.numNodes}
	// Our first report must exist before memberlist can ask for state.
	c.sample(time.Now())
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("mesh: start memberlist on %q: %w", cfg.Bind, err)
	}
	c.ml = ml
	c.wg.Add(3)
	go c.sampleLoop()
	go c.rejoinLoop(ctx)
	go c.repairLoop()
	return c, nil
}

// Addr is the address peers reach this node at, for Join lists.
func (c *Cluster) Addr() string { return c.ml.LocalNode().Address() }

// ID is this node's id.
func (c *Cluster) ID() string { return c.meta.ID }

// Events delivers joins, deaths, departures and leader changes. It holds
// the latest 256; older ones are dropped when nobody reads.
func (c *Cluster) Events() <-chan telemetry.Event { return c.events.ch }

// DroppedMessages counts gossip that did not parse or failed validation.
func (c *Cluster) DroppedMessages() uint64 { return c.dropped.Load() }

// SetExtra attaches a small opaque payload to this node's reports, e.g. the
// geo router's client-RTT summary. An empty value removes the key.
func (c *Cluster) SetExtra(key string, b []byte) error {
	if key == "" || len(key) > MaxExtraKey {
		return fmt.Errorf("mesh: extra key %q must be 1 to %d bytes", key, MaxExtraKey)
	}
	if len(b) > MaxExtraValue {
		return fmt.Errorf("mesh: extra %q is %d bytes, the limit is %d", key, len(b), MaxExtraValue)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.extra[key]; ok == (len(b) > 0) && bytes.Equal(old, b) {
		return nil // unchanged: a report would cost every node bandwidth for nothing
	}
	next := make(map[string][]byte, len(c.extra)+1)
	total := 0
	for k, v := range c.extra {
		if k != key {
			next[k] = v
			total += len(k) + len(v)
		}
	}
	if len(b) > 0 {
		next[key] = append([]byte(nil), b...)
		total += len(key) + len(b)
	}
	if len(next) > maxExtras {
		return fmt.Errorf("mesh: extra %q would make %d keys, the limit is %d", key, len(next), maxExtras)
	}
	if total > MaxExtraTotal {
		return fmt.Errorf("mesh: extra %q would make %d bytes of extras, the limit is %d", key, total, MaxExtraTotal)
	}
	c.extra = next
	c.dirty = true
	return nil
}

// Leave tells the cluster this node is going, waiting up to timeout for the
// message to get out. Shutdown must still be called. A last report marked
// leaving goes first, gossiped and sent straight to a few peers, so they
// show the node as left rather than dead.
func (c *Cluster) Leave(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c.mu.Lock()
	c.leaving, c.dirty = true, true
	c.mu.Unlock()
	c.sample(time.Now())
	c.sendLastReport()
	if err := c.ml.Leave(time.Until(deadline)); err != nil {
		return fmt.Errorf("mesh: leave: %w", err)
	}
	return nil
}

// sendLastReport sends our report over TCP to up to 8 live peers; they
// relay it on like any other.
func (c *Cluster) sendLastReport() {
	c.mu.Lock()
	msg, err := encodeMessage(kindReport, []*report{c.lastSent})
	var targets []*memberlist.Node
	for id, p := range c.peers {
		if id == c.meta.ID || p.state != StateAlive {
			continue
		}
		if n, ok := nodeAt(id, p.addr); ok {
			targets = append(targets, n)
		}
	}
	c.mu.Unlock()
	if err != nil {
		c.log.Error("cannot encode the leaving report", "err", err)
		return
	}
	rand.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
	for _, n := range targets[:min(len(targets), 8)] {
		if err := c.ml.SendReliable(n, msg); err != nil {
			c.log.Debug("leaving report not delivered", "peer", n.Name, "err", err)
		}
	}
}

// nodeAt names a peer for memberlist's direct sends.
func nodeAt(id, addr string) (*memberlist.Node, bool) {
	host, port, err := net.SplitHostPort(addr)
	n, perr := strconv.ParseUint(port, 10, 16)
	ip := net.ParseIP(host)
	if err != nil || perr != nil || ip == nil {
		return nil, false
	}
	return &memberlist.Node{Name: id, Addr: ip, Port: uint16(n)}, true
}

// Shutdown stops gossip and closes the sockets. It is safe to call twice.
func (c *Cluster) Shutdown() error {
	var err error
	c.shutdown.Do(func() {
		close(c.stop)
		c.wg.Wait()
		if e := c.ml.Shutdown(); e != nil {
			err = fmt.Errorf("mesh: shutdown: %w", e)
		}
	})
	return err
}

func (c *Cluster) sampleLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.timing.Sample)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.sample(time.Now())
			c.tendLeadership(time.Now())
		}
	}
}

// beatRetransmitMult is the relay multiplier of beats. A lost beat costs
// nothing until StaleAfter/Refresh of them are lost in a row, so they are
// relayed half as often as reports.
const beatRetransmitMult = 3

// sample reads the report function and broadcasts a full report when the
// figures, extras, the term or our lead changed; otherwise, once per refresh
// interval, a beat. Beats do not carry our coordinate: full reports do, and
// every ping ack, so each peer gets it at least once per probe round.
func (c *Cluster) sample(now time.Time) {
	s := c.report()
	c.mu.Lock()
	defer c.mu.Unlock()
	last := c.lastSent
	changed := last == nil || c.dirty || significant(last.Sample, s)
	if !changed && now.Sub(c.peers[c.meta.ID].recv) < c.timing.Refresh {
		return
	}
	c.seq++
	if !changed {
		self := c.peers[c.meta.ID]
		rep := *self.rep
		rep.Seq = c.seq
		self.rep, self.recv = &rep, now
		c.beats.QueueBroadcast(newBeatBroadcast(beat{ID: c.meta.ID, Gen: c.gen, Seq: c.seq, Base: last.Seq}, now))
		return
	}
	rep := &report{ID: c.meta.ID, Gen: c.gen, Seq: c.seq, Term: c.term, Leads: c.lead != 0 && !c.leaving, Leaving: c.leaving, Sample: s, Coord: c.coords.GetCoordinate(), Extra: c.extra}
	b, err := newBroadcast(rep, now)
	if errors.Is(err, errTooBig) {
		// Histograms are the bulk; the totals still fit.
		rep.Sample.Services = withoutHistograms(s.Services)
		b, err = newBroadcast(rep, now)
	}
	if err != nil {
		c.log.Error("cannot gossip load report", "err", err)
		return
	}
	c.lastSent, c.dirty = rep, false
	p := c.peerLocked(c.meta.ID)
	p.meta, p.rep, p.recv = c.meta, rep, now
	if p.state == "" {
		p.state, p.since = StateAlive, now
	}
	c.queue.QueueBroadcast(b)
}

func withoutHistograms(in map[string]telemetry.ServiceSample) map[string]telemetry.ServiceSample {
	out := make(map[string]telemetry.ServiceSample, len(in))
	for k, v := range in {
		v.Latency = telemetry.HistogramSnapshot{}
		out[k] = v
	}
	return out
}

// accepts says whether a report of generation gen may replace what we hold
// of p: one of the generation its metadata names, or, for a node that names
// none, the newest generation.
func (p *peer) accepts(gen uint64) bool {
	if p.gen != 0 {
		return gen == p.gen
	}
	return p.rep == nil || gen >= p.rep.Gen
}

func (c *Cluster) peerLocked(id string) *peer {
	p := c.peers[id]
	if p == nil {
		p = &peer{}
		c.peers[id] = p
	}
	return p
}

// merge keeps rep if it is newer than what we hold for its node, and
// relays it when it came by gossip, so it spreads epidemically.
func (c *Cluster) merge(rep *report, relay bool, now time.Time) {
	if rep.ID == c.meta.ID {
		return // nobody knows our figures better than we do
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[rep.ID]
	if p == nil && len(c.peers) >= maxPeers {
		c.dropped.Add(1)
		return
	}
	if p != nil && (!p.accepts(rep.Gen) || p.rep != nil && !rep.newerThan(p.rep)) {
		return
	}
	p = c.peerLocked(rep.ID)
	if rep.Leaving && p.state == StateDead {
		p.state = StateLeft
	}
	rep.Sample.Node = rep.ID
	p.rep, p.recv = rep, now
	if rep.Coord != nil && now.Sub(p.coordAt) > c.timing.Sample {
		p.coord = rep.Coord // a direct ping measured more recently is kept
	}
	if p.meta.Region == c.meta.Region && rep.Term > c.term {
		// Tell the region at once: a leader under a lower term learns it
		// was deposed, and beats must not refresh a report with the old one.
		c.term, c.dirty = rep.Term, true
	}
	if relay {
		if b, err := newBroadcast(rep, now); err == nil {
			c.queue.QueueBroadcast(b)
		}
	}
}

// mergeBeat moves the report we hold of a node to the beat's sequence and
// age, and relays the beat. A beat whose base we do not hold shows that we
// missed a report: we fetch it from its node rather than wait for the next
// change or push/pull.
func (c *Cluster) mergeBeat(bt beat, now time.Time) {
	if bt.ID == c.meta.ID {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[bt.ID]
	if p == nil || p.state == "" {
		return // membership and its push/pull will bring the node
	}
	held := p.rep
	switch {
	case !p.accepts(bt.Gen):
		return // its former self's
	case held != nil && !(&report{Gen: bt.Gen, Seq: bt.Seq}).newerThan(held):
		return // already seen
	case held == nil || held.Gen != bt.Gen || held.Seq < bt.Base:
		c.askRepairLocked(bt.ID, p, now)
		return
	}
	rep := *held
	rep.Seq, rep.Age = bt.Seq, bt.Age
	p.rep, p.recv = &rep, now
	c.beats.QueueBroadcast(newBeatBroadcast(bt, now))
}

// broadcast is one report or beat in memberlist's queue. Its age is patched in at
// each transmission, so a report relayed late still says how old it is.
type broadcast struct {
	id     string
	msg    []byte
	agePos int
	age    time.Duration // at queue time
	at     time.Time
}

func newBroadcast(rep *report, now time.Time) (*broadcast, error) {
	msg, err := encodeMessage(kindReport, []*report{rep})
	if err != nil {
		return nil, err
	}
	pos := 2 + uvarintLen(uint64(len(rep.ID))) + len(rep.ID) + uvarintLen(rep.Gen) + uvarintLen(rep.Seq)
	return &broadcast{id: rep.ID, msg: msg, agePos: pos, age: rep.Age, at: now}, nil
}

func uvarintLen(v uint64) int {
	var buf [binary.MaxVarintLen64]byte
	return binary.PutUvarint(buf[:], v)
}

func (b *broadcast) Name() string                            { return b.id }
func (b *broadcast) Invalidates(o memberlist.Broadcast) bool { return sameName(b, o) }
func (b *broadcast) Finished()                               {}

func sameName(b *broadcast, o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.id
}

func newBeatBroadcast(bt beat, now time.Time) *broadcast {
	msg := encodeBeat(bt)
	return &broadcast{id: bt.ID, msg: msg, agePos: len(msg) - 4, age: bt.Age, at: now}
}

func (b *broadcast) Message() []byte {
	out := append([]byte(nil), b.msg...)
	binary.BigEndian.PutUint32(out[b.agePos:], ageMillis(b.age+time.Since(b.at)))
	return out
}

// rejoinLoop joins the seeds while this node is alone, and reconnects to a
// peer declared dead, which is how two sides find each other again after a
// partition: memberlist itself stops talking to the dead.
func (c *Cluster) rejoinLoop(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if len(c.cfg.Join) > 0 && c.ml.NumMembers() <= 1 {
			if n, err := c.ml.Join(c.cfg.Join); err != nil && n == 0 {
				c.log.Warn("cannot reach any seed yet, will retry", "seeds", c.cfg.Join, "retry", c.timing.Rejoin, "err", err)
			} else {
				c.log.Info("joined the mesh", "contacted", n)
			}
		}
		if addr := c.deadPeerAddr(); addr != "" {
			if _, err := c.ml.Join([]string{addr}); err == nil {
				c.log.Info("reconnected to a peer thought dead", "addr", addr)
			}
		}
		c.forgetOldDead(time.Now())
		t.Reset(c.timing.Rejoin)
	}
}

// deadPeerAddr picks one peer that failed (not one that left on purpose).
func (c *Cluster) deadPeerAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var addrs []string
	for _, p := range c.peers {
		if p.state == StateDead && p.addr != "" {
			addrs = append(addrs, p.addr)
		}
	}
	if len(addrs) == 0 {
		return ""
	}
	return addrs[rand.IntN(len(addrs))]
}

// forgetOldDead drops peers that have been dead or gone for long enough
// that showing them no longer helps anyone.
func (c *Cluster) forgetOldDead(now time.Time) {
	keep := 4 * c.timing.StaleAfter
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, p := range c.peers {
		gone := (p.state == StateDead || p.state == StateLeft) && now.Sub(p.since) > keep
		// A report of a node that never joined, say one relayed after it died.
		orphan := p.state == "" && now.Sub(p.recv) > keep
		if gone || orphan {
			delete(c.peers, id)
			c.coords.ForgetNode(id)
		}
	}
}
