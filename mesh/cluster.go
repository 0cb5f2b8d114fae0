// Package mesh joins edge nodes into one memberlist cluster, sends each
// node's load report to its region, merges a region's reports into its
// region view, elects one leader per region under a lease, gossips one
// compact summary per region fleet-wide, and estimates RTTs between nodes
// with Vivaldi coordinates. docs/mesh.md explains the model and the settings.
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
// that holds the key cannot grow it without limit. maxOrphans bounds, apart,
// the reports held of nodes memberlist has not shown us (one that outran
// its node's join): made-up ids would otherwise fill the table, and every
// node joining then would be left out of it for good, since memberlist
// tells of a join once.
const (
	maxPeers   = 10000
	maxOrphans = 1024
)

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
	queue   *memberlist.TransmitLimitedQueue // region summaries
	beats   *memberlist.TransmitLimitedQueue // summary beats, sent in what room summaries leave
	coords  *coordinate.Client
	events  *eventQueue
	outbox  chan direct // UDP messages to one node, for sendLoop
	streams chan direct // TCP ones, for streamLoop

	dropped atomic.Uint64 // malformed
	unknown atomic.Uint64 // of a kind or version this release does not know
	unsent  atomic.Uint64 // direct sends dropped at a full queue
	alive   atomic.Int32

	// streamBytes bounds the gossip streams' bytes; nil with a
	// Config.Transport.
	streamBytes *streamBytes

	mu       sync.Mutex
	peers    map[string]*peer
	orphans  int                         // peers memberlist has not shown us (state "")
	regions  map[string]map[string]*peer // peers by region, so a region costs its members only
	seq      uint64
	lastSent *report // our latest full report; beats since refer to it
	resend   []byte  // our latest report, sent once more a sample later against loss
	extra    map[string][]byte
	dirty    bool // extras, term, lead or leaving changed since lastSent
	leaving  bool
	term     uint64                // highest leader term known in our region
	lead     uint64                // the term we lead our region under; 0 when not leading
	roster   map[string]time.Time  // our region's members, when last eligible (leader.go)
	leaders  map[string]leaderTerm // per region, as last reported in events
	lease    leaseState            // lease.go

	summaries   map[string]*heldSummary // per region, the latest summary
	mySum       *summary                // the latest summary we sent, while we summarise
	sumSeq      uint64
	sumAt       time.Time // when mySum was sent
	sumBeatAt   time.Time // when mySum or a beat of it was last sent
	summarising bool
	sumWants    int       // wants of our summary from other regions since we last sent it
	regossipAt  time.Time // when we last gossiped our summary again for them

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
		regions: map[string]map[string]*peer{},
		leaders: map[string]leaderTerm{},
		roster:  map[string]time.Time{},
		outbox:  make(chan direct, outboxSize),
		streams: make(chan direct, streamsSize),
		stop:    make(chan struct{}),

		summaries: map[string]*heldSummary{},
	}
	mc, err := cfg.memberlistConfig(meta.ID)
	if err != nil {
		return nil, err
	}
	mc.Logger = memberlistLogger(log)
	if mc.Transport == nil {
		t, err := listen(mc.BindAddr, mc.BindPort, cfg.streams(), mc, log)
		if err != nil {
			return nil, fmt.Errorf("mesh: listen on %q: %w", cfg.Bind, err)
		}
		mc.Transport, c.streamBytes = t, t.bytes
	}
	c.keyring = mc.Keyring
	d := &delegate{c}
	mc.Delegate, mc.Events, mc.Ping = d, d, d
	c.queue = newBroadcastQueue(c.timing.RetransmitMult, c.numNodes)
	c.beats = newBroadcastQueue(c.timing.RetransmitMult, c.numNodes)
	// Our first report must exist before memberlist can ask for state.
	c.sample(time.Now())
	ml, err := memberlist.Create(mc)
	if err != nil {
		if cfg.Transport == nil {
			mc.Transport.Shutdown() // ours to close
		}
		return nil, fmt.Errorf("mesh: start memberlist on %q: %w", cfg.Bind, err)
	}
	c.ml = ml
	c.wg.Add(4)
	go c.sampleLoop()
	go c.rejoinLoop(ctx)
	go c.sendLoop()
	go c.streamLoop()
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

// UnknownMessages counts messages skipped for a kind or format version
// this release does not know, as a newer node may send during an upgrade.
func (c *Cluster) UnknownMessages() uint64 { return c.unknown.Load() }

// UnsentMessages counts direct sends (reports, wants, answers) dropped
// because their queue was full: the mesh repairs them, but a count that
// keeps growing says the node sends more than its links carry.
func (c *Cluster) UnsentMessages() uint64 { return c.unsent.Load() }

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
// leaving goes first, sent straight to a few peers within half the
// timeout, so they show the node as left rather than dead.
func (c *Cluster) Leave(timeout time.Duration) error {
	start := time.Now()
	c.mu.Lock()
	c.leaving, c.dirty = true, true
	c.mu.Unlock()
	c.sample(start)
	c.sendLastReport(start.Add(timeout / 2))
	// memberlist waits without end for a timeout that is not positive.
	if err := c.ml.Leave(max(time.Until(start.Add(timeout)), time.Nanosecond)); err != nil {
		return fmt.Errorf("mesh: leave: %w", err)
	}
	return nil
}

// sendLastReport sends our report over TCP to our region's live members
// (at most 16), the only nodes that hold our reports; the rest of the
// fleet learns of the leave from our region's next summary. The sends go
// at once and are waited for until by: each dial is bounded only by
// memberlist's TCPTimeout, and one after the other, 16 unreachable peers
// held a leave for minutes. A send still dialling then ends within it.
func (c *Cluster) sendLastReport(by time.Time) {
	c.mu.Lock()
	msg, err := encodeMessage(kindReport, []*report{c.lastSent})
	targets := c.regionTargetsLocked()
	c.mu.Unlock()
	if err != nil {
		c.log.Error("cannot encode the leaving report", "err", err)
		return
	}
	rand.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
	targets = targets[:min(len(targets), 16)]
	sent := make(chan struct{}, len(targets))
	for _, n := range targets {
		go func() {
			if err := c.ml.SendReliable(n, msg); err != nil {
				c.log.Debug("leaving report not delivered", "peer", n.Name, "err", err)
			}
			sent <- struct{}{}
		}()
	}
	timeout := time.NewTimer(time.Until(by))
	defer timeout.Stop()
	for range targets {
		select {
		case <-sent:
		case <-timeout.C:
			c.log.Debug("leaving report not delivered to every peer within the leave's timeout")
			return
		}
	}
}

// regionTargetsLocked lists the other members of our region that
// memberlist shows alive.
func (c *Cluster) regionTargetsLocked() []*memberlist.Node {
	var out []*memberlist.Node
	for id, p := range c.regions[c.meta.Region] {
		if id == c.meta.ID || p.state != StateAlive {
			continue
		}
		if n, ok := nodeAt(id, p.addr); ok {
			out = append(out, n)
		}
	}
	return out
}

// toRegionLocked sends msg to every other live member of our region, one
// UDP packet each (which memberlist fills up with gossip).
func (c *Cluster) toRegionLocked(msg []byte) {
	for _, n := range c.regionTargetsLocked() {
		c.send(direct{to: n, msg: msg})
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
			c.summarise(time.Now())
		}
	}
}

// sample reads the report function and sends a full report to our region
// when the figures, extras, the term or our lead changed, and once more a
// sample later against loss; otherwise, once per refresh interval, a beat.
// Beats do not carry our coordinate: full reports do, and every ping ack.
func (c *Cluster) sample(now time.Time) {
	s := clampFigures(c.report())
	c.mu.Lock()
	defer c.mu.Unlock()
	last := c.lastSent
	changed := last == nil || c.dirty || significant(last.Sample, s)
	if !changed && now.Sub(c.peers[c.meta.ID].recv) < c.timing.Refresh {
		if c.resend != nil {
			c.toRegionLocked(c.resend)
			c.resend = nil
		}
		return
	}
	c.seq++
	if !changed {
		self := c.peers[c.meta.ID]
		rep := *self.rep
		rep.Seq = c.seq
		self.rep, self.recv = &rep, now
		c.resend = nil
		c.toRegionLocked(encodeBeat(beat{ID: c.meta.ID, Gen: c.gen, Seq: c.seq, Base: last.Seq}))
		return
	}
	rep := &report{ID: c.meta.ID, Gen: c.gen, Seq: c.seq, Term: c.term, Leads: c.lead != 0 && !c.leaving, Leaving: c.leaving, Sample: s, Coord: c.coords.GetCoordinate(), Extra: c.extra}
	msg, err := encodeMessage(kindReport, []*report{rep})
	if errors.Is(err, errTooBig) {
		// Histograms are the bulk; the totals still fit.
		rep.Sample.Services = withoutHistograms(s.Services)
		msg, err = encodeMessage(kindReport, []*report{rep})
	}
	if err != nil {
		c.log.Error("cannot send load report", "err", err)
		return
	}
	c.lastSent, c.dirty, c.resend = rep, false, msg
	p := c.peerLocked(c.meta.ID)
	c.setMetaLocked(c.meta.ID, p, c.meta)
	p.rep, p.recv = rep, now
	if p.state == "" {
		p.state, p.since = StateAlive, now
	}
	c.toRegionLocked(msg)
}

func withoutHistograms(in map[string]telemetry.ServiceSample) map[string]telemetry.ServiceSample {
	out := make(map[string]telemetry.ServiceSample, len(in))
	for k, v := range in {
		v.Latency = telemetry.HistogramSnapshot{}
		out[k] = v
	}
	return out
}

// replacesLocked says whether report (gen, seq) may replace what we hold
// of p: one of the generation its metadata names (for a node that names
// none, any) newer than ours, or, once ours is stale, any of it. Gossip
// does not say who sent a message, so a member holding the key can send
// a report in p's name with the largest sequence, which nothing p sends
// would be newer than: such a forgery misleads only while it is fresh.
func (c *Cluster) replacesLocked(p *peer, gen, seq uint64, now time.Time) bool {
	if p.gen != 0 && gen != p.gen {
		return false // its former self's
	}
	if p.rep == nil || p.reportAge(now) > c.timing.StaleAfter {
		return true
	}
	return (&report{Gen: gen, Seq: seq}).newerThan(p.rep)
}

func (c *Cluster) peerLocked(id string) *peer {
	p := c.peers[id]
	if p == nil {
		p = &peer{}
		c.peers[id] = p
		c.setMetaLocked(id, p, NodeMeta{})
	}
	return p
}

// setMetaLocked sets p's metadata, keeping the region index right.
func (c *Cluster) setMetaLocked(id string, p *peer, meta NodeMeta) {
	if in := c.regions[p.meta.Region]; in[id] == p && p.meta.Region != meta.Region {
		delete(in, id)
		if len(in) == 0 {
			delete(c.regions, p.meta.Region)
		}
	}
	p.meta = meta
	in := c.regions[meta.Region]
	if in == nil {
		in = map[string]*peer{}
		c.regions[meta.Region] = in
	}
	in[id] = p
}

// forgetLocked drops a peer from the table and the region index.
func (c *Cluster) forgetLocked(id string) {
	if p := c.peers[id]; p != nil {
		if p.state == "" {
			c.orphans--
		}
		if in := c.regions[p.meta.Region]; in != nil {
			delete(in, id)
			if len(in) == 0 {
				delete(c.regions, p.meta.Region)
			}
		}
	}
	delete(c.peers, id)
}

// merge keeps rep if it is newer than what we hold for its node. Reports
// are not relayed: each node sends its own to its region.
func (c *Cluster) merge(rep *report, now time.Time) {
	if rep.ID == c.meta.ID {
		return // nobody knows our figures better than we do
	}
	if !c.plausibleTerm(rep.Term) {
		c.drop("report", fmt.Errorf("term %d is implausible", rep.Term), nil)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[rep.ID]
	if p == nil {
		if c.orphans >= maxOrphans {
			c.dropped.Add(1)
			return
		}
		p = c.peerLocked(rep.ID)
		c.orphans++
	} else if !c.replacesLocked(p, rep.Gen, rep.Seq, now) {
		return
	}
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
}

// mergeBeat moves the report we hold of a node to the beat's sequence and
// age. A beat whose base we do not hold shows that we missed a report: we
// fetch it from its node rather than wait for the next change or push/pull.
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
	case !c.replacesLocked(p, bt.Gen, bt.Seq, now):
		return // its former self's, or already seen
	case held == nil || held.Gen != bt.Gen || held.Seq < bt.Base || held.Seq > bt.Seq:
		// Missed, or ours is stale and ahead of the beat (a forgery's):
		// what the beat refreshes we do not hold.
		c.askRepairLocked(bt.ID, p, now)
		return
	}
	rep := *held
	rep.Seq, rep.Age = bt.Seq, bt.Age
	p.rep, p.recv = &rep, now
}

// broadcast is one summary or summary beat in memberlist's queue. Its age
// is patched in at each transmission, so a summary relayed late still says
// how old it is.
type broadcast struct {
	name   string
	msg    []byte
	agePos int
	age    time.Duration // at queue time
	at     time.Time
}

// newSummaryBroadcast queues s in full, or compact. Either replaces a
// summary of its region still queued.
func newSummaryBroadcast(s *summary, compact bool, now time.Time) *broadcast {
	msg := encodeSummary(s)
	if compact {
		msg = encodeCompactSummary(s)
	}
	return &broadcast{name: s.Region, msg: msg, agePos: s.agePos(), age: s.Age, at: now}
}

func newSumBeatBroadcast(bt sumBeat, now time.Time) *broadcast {
	msg := encodeSumBeat(bt)
	return &broadcast{name: bt.Region, msg: msg, agePos: len(msg) - 4, age: bt.Age, at: now}
}

func uvarintLen(v uint64) int {
	var buf [binary.MaxVarintLen64]byte
	return binary.PutUvarint(buf[:], v)
}

func (b *broadcast) Name() string { return b.name }
func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}
func (b *broadcast) Finished() {}

func (b *broadcast) Message() []byte {
	out := append([]byte(nil), b.msg...)
	binary.BigEndian.PutUint32(out[b.agePos:], ageMillis(b.age+time.Since(b.at)))
	return out
}

// rejoinLoop joins the seeds while this node is alone, and reconnects to a
// peer declared dead, which is how two sides find each other again after a
// partition: memberlist itself stops talking to the dead. It also
// pushes/pulls with a summary's sender that knows a member we do not.
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
		if addr := c.syncAddr(time.Now()); addr != "" {
			if _, err := c.ml.Join([]string{addr}); err == nil {
				c.log.Info("pushed/pulled with a summary's sender, which lists a member we had not heard of", "addr", addr)
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
			c.forgetLocked(id)
			c.coords.ForgetNode(id)
		}
	}
	for region, h := range c.summaries {
		if now.Sub(h.recv) > keep+c.timing.SummaryStale && len(c.regions[region]) == 0 {
			delete(c.summaries, region)
		}
	}
}
