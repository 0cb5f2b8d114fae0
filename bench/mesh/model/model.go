// Package model is a discrete-event simulation of the mesh's gossip, for
// fleet sizes one machine cannot run for real. It models memberlist's
// transport (gossip rounds to GossipNodes random peers every
// GossipInterval, piggybacking on probes and direct sends, the UDP packet
// limit, compound framing, push/pull scaled with the cluster size) and
// drives memberlist's own TransmitLimitedQueue with messages that
// are mesh's real encodings (mesh.SampleMessages), so that memberlist's
// compression works on what it would get. What it leaves out: CPU time
// (every timer fires on time), memberlist's own alive and suspect
// broadcasts (none while nothing fails), and the content of memberlist's
// own messages (random bytes of their size, which do not compress).
//
// Two protocols are modelled: Current, the mesh before issue 13 (every
// report and beat gossiped fleet-wide), and Proposed, the mesh as built
// since (reports and beats sent directly to the members of the sender's
// region, one compact summary per region gossiped fleet-wide, the
// leader's lease rounds); docs/benchmarks.md compares them.
package model

import (
	"bytes"
	"compress/lzw"
	"container/heap"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/mesh"
)

// Protocol selects what is gossiped.
type Protocol int

const (
	// Current gossips every node's reports and beats to every node.
	Current Protocol = iota
	// Proposed sends reports and beats straight to the sender's region,
	// gossips per region a summary (merged load, and per member its health
	// and in-flight count), and runs the leader's lease rounds.
	Proposed
)

func (p Protocol) String() string {
	if p == Proposed {
		return "proposed"
	}
	return "current"
}

// Config is one simulated fleet.
type Config struct {
	Nodes, Regions int
	Protocol       Protocol
	Warmup         time.Duration // simulated before anything is measured
	Duration       time.Duration // simulated and measured after Warmup
	Trials         int           // timed load changes, spread over Duration
	// Churn is the mean time between significant load changes of one node
	// (a Poisson process per node); 0 for a fleet where only trials change.
	Churn     time.Duration
	Loss      float64       // share of UDP packets lost
	DelayIn   time.Duration // one-way delay within a region
	DelayOut  time.Duration // one-way delay between regions
	Encrypted bool          // keyring on: memberlist's AES-GCM overhead per packet
	Seed      uint64

	Memberlist *memberlist.Config // gossip interval, fan-out, probe interval, UDP size, push/pull, compression
	Mesh       Timing
	// Encode gives a node's messages (mesh.SampleMessages); GenSpread is
	// how far apart the nodes' generations (start times) lie.
	Encode    func(id, region string, gen uint64) (mesh.WireMessages, error)
	GenSpread time.Duration
	// Summarise gives a region's summary, in full and compact, and its
	// summary beat as its sender (generation gen) encodes them
	// (mesh.SampleSummary).
	Summarise func(region, sender string, gen uint64, members []string) (sum, compact, beat []byte)
	Proposal  Proposal
}

// Timing is mesh's report timing (mesh.Timing's profile values).
type Timing struct {
	Sample, Refresh, StaleAfter time.Duration
	RelayMult, BeatMult         int
}

// Proposal holds the proposed protocol's settings.
type Proposal struct {
	SummaryMult    int           // retransmit multiplier of summaries
	SummaryMinGap  time.Duration // a region's summary is sent at most this often on change
	SummaryRefresh time.Duration // an unchanged region's summary beat is sent this often
	SummaryStale   time.Duration // a summary older than this is stale
	Lease          time.Duration // the leader asks its region to confirm it every Lease/4
	Resend         bool          // a changed report goes out twice, one sample apart
}

// LAN is the lan profile's timing, as docs/mesh.md lists it.
func LAN() Timing {
	return Timing{Sample: 250 * time.Millisecond, Refresh: 5 * time.Second, StaleAfter: 15 * time.Second, RelayMult: 6, BeatMult: 3}
}

// DefaultProposal is the lan profile of the mesh as built (mesh.Timing).
func DefaultProposal() Proposal {
	return Proposal{SummaryMult: 3, SummaryMinGap: 4 * time.Second, SummaryRefresh: 5 * time.Second,
		SummaryStale: 20 * time.Second, Lease: 2 * time.Second, Resend: true}
}

// Result is what one run measured.
type Result struct {
	// RegionSeen is, per timed change, how long until every other node of
	// its region held it; FleetSeen, until every node did (Current: the
	// report; Proposed: nodes of other regions a summary that reflects it).
	RegionSeen, FleetSeen []time.Duration
	// FleetEach is, per timed change and node, how long until that node
	// held it (as FleetSeen counts it).
	FleetEach []time.Duration
	// Missed counts timed changes some node had not seen when the run ended.
	RegionMissed, FleetMissed int
	UDP, TCP                  float64 // bytes sent per node per second
	// StaleRegion and StaleFleet are shares of (observer, member) checks,
	// once a second, that found the member's figures stale: within the
	// observer's region, and over the fleet.
	StaleRegion, StaleFleet float64
	// LeaderChanges counts, over all nodes, how often the region leader a
	// node would pick (the lowest id it sees fresh) changed.
	LeaderChanges int
	// MaxQueue is the longest broadcast queue seen.
	MaxQueue int
	// ByClass splits the bytes sent per node per second by what carried
	// them (a packet's size shared among its parts by their uncompressed
	// length): see the class constants.
	ByClass map[string]float64
}

// Classes of bytes in Result.ByClass.
const (
	ClassMemberlist = "memberlist ping/ack"
	ClassReport     = "reports"
	ClassBeat       = "beats"
	ClassSummary    = "summaries"
	ClassSumBeat    = "summary beats"
	ClassLease      = "lease rounds"
	ClassFraming    = "framing, CRC, encryption"
	ClassRepair     = "repairs (tcp)"
	ClassPushPull   = "push/pull (tcp)"
)

var kindClass = [...]string{kReport: ClassReport, kBeat: ClassBeat, kSummary: ClassSummary, kSumBeat: ClassSumBeat, kLeaseAsk: ClassLease, kLeaseGrant: ClassLease, kSumCompact: ClassSummary}

// memberlist's framing, from its net.go, util.go and security.go.
const (
	compoundMsg     = 7  // memberlist's compoundMsg type
	compressWrapper = 14 // a compressMsg: type byte, msgpack map of Algo and Buf
	compoundHeader  = 2  // compound message type and count
	compoundEntry   = 2  // length of each message in a compound
	userMsgHeader   = 1  // a delegate's message is framed with a type byte
	userMsgType     = 8  // memberlist's userMsg type
	gossipCRC       = 5  // gossip packets to a peer speaking protocol 5 carry a CRC
	encryptOverhead = 29 // version 1: version byte, IV, tag
)

type kind uint8

const (
	kReport kind = iota
	kBeat
	kSummary
	kSumBeat
	kLeaseAsk
	kLeaseGrant
	kSumCompact
)

// msg is one message: its meaning for the model, and its bytes for the
// wire, which are those of the real encoding (the queue hands back the
// bytes, and sim.byBytes finds the message again).
type msg struct {
	kind    kind
	subject int // a node for reports and beats, a region for summaries
	seq     uint64
	base    uint64 // a beat's base report
	ver     int    // the load version a report carries
	origin  time.Duration
	reflect []int // a summary: its region members' versions, in member order
	bytes   []byte
}

// bcast puts a msg in a TransmitLimitedQueue under its subject's name.
type bcast struct {
	name string
	m    *msg
}

func (b *bcast) Name() string    { return b.name }
func (b *bcast) Message() []byte { return b.m.bytes }
func (b *bcast) Finished()       {}
func (b *bcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*bcast)
	return ok && ob.name == b.name
}

type view struct {
	seq, full uint64 // the latest sequence held, and that of the full report behind it
	ver       int
	origin    time.Duration
	wantAt    time.Duration // last repair asked of this member
	answerAt  time.Duration // last repair answered to this member
	reflect   []int         // a summary's member versions
	listed    bool          // a region's member list is held, for compact summaries
}

type node struct {
	idx, region, rank int // rank: position among its region's members
	name              string
	wire              mesh.WireMessages
	gen               uint64
	queues            []*memberlist.TransmitLimitedQueue // in GetBroadcasts order

	seq, fullSeq    uint64
	ver, fullVer    int
	changed, resend bool
	lastSend        time.Duration
	held            []view // per node
	sums            []view // per region

	sumSeq, sumFull                     uint64
	lastSummary, lastSumSend, lastLease time.Duration
	summaryVers                         []int
	leader                              int
}

type sim struct {
	cfg                       Config
	rng                       *rand.Rand
	now                       time.Duration
	q                         eventQueue
	nodes                     []*node
	members                   [][]int // per region, node indices in id order
	byBytes                   map[*byte]*msg
	ping                      []byte
	ack                       []byte
	summary, compact, sumBeat [][]byte // per region, the proposal's encodings
	lzw                       bytes.Buffer
	nodeState                 int // bytes per member in memberlist's push/pull

	udp, tcp                  int64
	checksRegion, staleRegion int64
	checksFleet, staleFleet   int64
	leaderChanges             int
	maxQueue                  int
	byClass                   map[string]float64
	trials                    []*trial
}

type trial struct {
	subject, ver          int
	at                    time.Duration
	regionLeft, fleetLeft int
	regionSeen, fleetSeen []bool
	regionDone, fleetDone time.Duration
	each                  []time.Duration
}

// Run simulates one fleet.
func Run(cfg Config) (Result, error) {
	if cfg.Nodes < 2 || cfg.Regions < 1 || cfg.Regions > cfg.Nodes {
		return Result{}, fmt.Errorf("model: %d nodes in %d regions", cfg.Nodes, cfg.Regions)
	}
	if cfg.Memberlist == nil || cfg.Mesh.Sample <= 0 || cfg.Mesh.Refresh <= 0 || cfg.Encode == nil {
		return Result{}, fmt.Errorf("model: memberlist config, mesh timing and encoder are required")
	}
	s := &sim{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x6d657368)), byBytes: map[*byte]*msg{}, byClass: map[string]float64{}}
	if err := s.build(); err != nil {
		return Result{}, err
	}
	s.schedule()
	s.loop(cfg.Warmup + cfg.Duration)
	return s.result(), nil
}

func (s *sim) build() error {
	n := s.cfg.Nodes
	s.members = make([][]int, s.cfg.Regions)
	numNodes := func() int { return n }
	// Generations are start times before a fixed day, so that one seed
	// gives the same encodings, and the same compressed sizes, every run.
	base := uint64(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	for i := range n {
		r := i % s.cfg.Regions
		nd := &node{idx: i, region: r, rank: len(s.members[r]), name: fmt.Sprintf("pop-%04d", i), held: make([]view, n), seq: 1, fullSeq: 1}
		gen := base
		if s.cfg.GenSpread > 0 {
			gen -= uint64(s.rng.Int64N(int64(s.cfg.GenSpread)))
		}
		w, err := s.cfg.Encode(nd.name, regionName(r), gen)
		if err != nil {
			return err
		}
		nd.wire, nd.gen = w, gen
		s.members[r] = append(s.members[r], i)
		mult := []int{s.cfg.Mesh.RelayMult, s.cfg.Mesh.BeatMult}
		if s.cfg.Protocol == Proposed {
			mult = []int{s.cfg.Proposal.SummaryMult, s.cfg.Proposal.SummaryMult}
			nd.sums = make([]view, s.cfg.Regions)
		}
		for _, m := range mult {
			q := &memberlist.TransmitLimitedQueue{RetransmitMult: m, NumNodes: numNodes}
			if s.cfg.Protocol == Proposed {
				q = mesh.NewBroadcastQueue(m, numNodes) // with mesh's guard against memberlist#263
			}
			nd.queues = append(nd.queues, q)
		}
		for j := range nd.held {
			nd.held[j] = view{seq: 1, full: 1, wantAt: -time.Hour, answerAt: -time.Hour}
		}
		nd.lastSend = -time.Duration(s.rng.Int64N(int64(s.cfg.Mesh.Refresh)))
		s.nodes = append(s.nodes, nd)
	}
	// memberlist's own messages, as random bytes: the model does not
	// credit their field names to compression.
	name := s.nodes[0].name
	s.ping, s.ack = s.random(pingSize(name)), s.random(ackSize())
	s.nodeState = nodeStateSize(name, len(s.nodes[0].wire.Meta))
	for r := range s.cfg.Regions {
		if s.cfg.Protocol != Proposed {
			continue
		}
		if s.cfg.Summarise == nil {
			return fmt.Errorf("model: the proposed protocol needs Summarise")
		}
		var names []string
		for _, j := range s.members[r] {
			names = append(names, s.nodes[j].name)
		}
		sender := s.nodes[s.members[r][0]]
		sum, compact, beat := s.cfg.Summarise(regionName(r), sender.name, sender.gen, names)
		s.summary, s.compact, s.sumBeat = append(s.summary, sum), append(s.compact, compact), append(s.sumBeat, beat)
	}
	return nil
}

func regionName(r int) string { return fmt.Sprintf("region-%02d", r) }

func (s *sim) random(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(s.rng.Uint32())
	}
	return b
}

// Events.
type evKind uint8

const (
	evGossip evKind = iota
	evProbe
	evSample
	evPushPull
	evPacket
	evStream
	evChange
	evMeasure
)

type event struct {
	at   time.Duration
	kind evKind
	node int
	from int
	msgs []*msg
	base int // a probe's reply is due: the ack's size, else 0
}

type eventQueue []*event

func (q eventQueue) Len() int           { return len(q) }
func (q eventQueue) Less(i, j int) bool { return q[i].at < q[j].at }
func (q eventQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)        { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

func (s *sim) at(d time.Duration, e *event) {
	e.at = s.now + d
	heap.Push(&s.q, e)
}

func (s *sim) phase(d time.Duration) time.Duration { return time.Duration(s.rng.Int64N(int64(d))) }

func (s *sim) pushPullInterval() time.Duration {
	iv, n := s.cfg.Memberlist.PushPullInterval, s.cfg.Nodes
	if n <= 32 {
		return iv
	}
	return time.Duration(math.Ceil(math.Log2(float64(n))-math.Log2(32))+1) * iv
}

func (s *sim) schedule() {
	ml := s.cfg.Memberlist
	for i := range s.nodes {
		s.at(s.phase(ml.GossipInterval), &event{kind: evGossip, node: i})
		s.at(s.phase(ml.ProbeInterval), &event{kind: evProbe, node: i})
		s.at(s.phase(s.cfg.Mesh.Sample), &event{kind: evSample, node: i})
		s.at(s.phase(s.pushPullInterval()), &event{kind: evPushPull, node: i})
		if s.cfg.Churn > 0 {
			s.at(s.expo(s.cfg.Churn), &event{kind: evChange, node: i, base: 1})
		}
	}
	for t := range s.cfg.Trials {
		// Over the first three quarters, so the last has time to spread.
		gap := s.cfg.Duration * 3 / 4 / time.Duration(s.cfg.Trials)
		s.at(s.cfg.Warmup+time.Duration(t)*gap+s.phase(gap/2), &event{kind: evChange, node: s.rng.IntN(len(s.nodes))})
	}
	s.at(s.cfg.Warmup, &event{kind: evMeasure})
}

func (s *sim) expo(mean time.Duration) time.Duration {
	return time.Duration(s.rng.ExpFloat64() * float64(mean))
}

func (s *sim) loop(end time.Duration) {
	ml := s.cfg.Memberlist
	for s.q.Len() > 0 {
		e := heap.Pop(&s.q).(*event)
		if e.at > end {
			return
		}
		s.now = e.at
		switch e.kind {
		case evGossip:
			s.gossip(s.nodes[e.node])
			s.at(ml.GossipInterval, e)
		case evProbe:
			s.probe(s.nodes[e.node])
			s.at(ml.ProbeInterval, e)
		case evSample:
			s.sample(s.nodes[e.node])
			s.at(s.cfg.Mesh.Sample, e)
		case evPushPull:
			s.pushPull(s.nodes[e.node])
			s.at(s.pushPullInterval(), e)
		case evPacket:
			s.receive(s.nodes[e.node], e.from, e.msgs, true)
			if e.base > 0 { // a ping: answer with an ack, piggybacking
				s.send(s.nodes[e.node], e.from, s.ack)
			}
		case evStream:
			s.receive(s.nodes[e.node], e.from, e.msgs, false)
		case evChange:
			nd := s.nodes[e.node]
			nd.ver++
			nd.changed = true
			if e.base == 1 {
				s.at(s.expo(s.cfg.Churn), e)
			} else {
				s.startTrial(nd)
			}
		case evMeasure:
			s.measure()
			s.at(time.Second, e)
		}
	}
}

func (s *sim) measuring() bool { return s.now >= s.cfg.Warmup }

// newMsg gives m its own copy of its encoding, by which the queue's
// output is mapped back to it.
func (s *sim) newMsg(m *msg, wire []byte) *msg {
	m.bytes = slices.Clone(wire)
	s.byBytes[&m.bytes[0]] = m
	return m
}

func (s *sim) lookup(b []byte) *msg { return s.byBytes[&b[0]] }

func (s *sim) enqueue(nd *node, q int, name string, m *msg) {
	nd.queues[q].QueueBroadcast(&bcast{name: name, m: m})
	if l := nd.queues[q].NumQueued(); l > s.maxQueue {
		s.maxQueue = l
	}
}

// broadcasts is memberlist's getBroadcasts with our delegate's order: the
// queues one after the other in the room left.
func (s *sim) broadcasts(nd *node, overhead, limit int) []*msg {
	var out []*msg
	if limit <= overhead+userMsgHeader {
		return nil
	}
	for _, q := range nd.queues {
		for _, b := range q.GetBroadcasts(overhead+userMsgHeader, limit) {
			limit -= overhead + userMsgHeader + len(b)
			out = append(out, s.lookup(b))
		}
	}
	return out
}

func (s *sim) udpRoom() int {
	room := s.cfg.Memberlist.UDPBufferSize - compoundHeader
	if s.cfg.Encrypted {
		room -= encryptOverhead
	}
	return room
}

// packetSize is what one UDP packet carries: a message alone, or a
// compound; compressed when memberlist's LZW makes it smaller, then the
// CRC (gossip only) and the encryption.
func (s *sim) packetSize(base []byte, msgs []*msg, crc bool) int {
	var parts [][]byte
	if base != nil {
		parts = append(parts, base)
	}
	for _, m := range msgs {
		parts = append(parts, append([]byte{userMsgType}, m.bytes...))
	}
	pkt := parts[0]
	if len(parts) > 1 {
		pkt = []byte{compoundMsg, byte(len(parts))}
		for _, p := range parts {
			pkt = binary.BigEndian.AppendUint16(pkt, uint16(len(p)))
		}
		for _, p := range parts {
			pkt = append(pkt, p...)
		}
	}
	size := len(pkt)
	if s.cfg.Memberlist.EnableCompression {
		s.lzw.Reset()
		w := lzw.NewWriter(&s.lzw, lzw.LSB, 8)
		w.Write(pkt)
		w.Close()
		if c := compressWrapper + s.lzw.Len(); c < size {
			size = c
		}
	}
	if crc {
		size += gossipCRC
	}
	if s.cfg.Encrypted {
		size += encryptOverhead
	}
	return size
}

func (s *sim) delay(a, b *node) time.Duration {
	if a.region == b.region {
		return s.cfg.DelayIn
	}
	return s.cfg.DelayOut
}

func (s *sim) deliver(from *node, to int, base []byte, msgs []*msg, crc, ping bool) {
	bytes := s.packetSize(base, msgs, crc)
	if s.measuring() {
		s.udp += int64(bytes)
		s.account(base, msgs, crc, bytes)
	}
	if s.rng.Float64() < s.cfg.Loss {
		return
	}
	e := &event{kind: evPacket, node: to, from: from.idx, msgs: msgs}
	if ping {
		e.base = 1
	}
	s.at(s.delay(from, s.nodes[to]), e)
}

// account shares a packet's bytes among memberlist's own message, the
// mesh messages in it and the rest (framing, CRC, encryption), by their
// uncompressed length; compression shrinks each share in proportion.
func (s *sim) account(base []byte, msgs []*msg, crc bool, bytes int) {
	parts := map[string]int{ClassMemberlist: len(base)}
	sum := len(base)
	for _, m := range msgs {
		parts[kindClass[m.kind]] += len(m.bytes)
		sum += len(m.bytes)
	}
	content := float64(bytes)
	if over := s.overhead(base, msgs, crc); over < bytes && sum > 0 {
		s.byClass[ClassFraming] += float64(over)
		content -= float64(over)
	}
	for class, n := range parts {
		if n > 0 {
			s.byClass[class] += content * float64(n) / float64(sum)
		}
	}
}

// overhead is what a packet adds to its messages before compression:
// compound framing, user message types, the CRC and the encryption.
func (s *sim) overhead(base []byte, msgs []*msg, crc bool) int {
	over := len(msgs) * userMsgHeader
	if len(msgs)+min(len(base), 1) > 1 {
		over += compoundHeader + compoundEntry*(len(msgs)+min(len(base), 1))
	}
	if crc {
		over += gossipCRC
	}
	if s.cfg.Encrypted {
		over += encryptOverhead
	}
	return over
}

// send is memberlist's sendMsg: a message of its own (an ack), with
// broadcasts piggybacked in the room left.
func (s *sim) send(from *node, to int, base []byte) {
	extra := s.broadcasts(from, compoundEntry, s.udpRoom()-len(base))
	s.deliver(from, to, base, extra, false, false)
}

// direct is memberlist's SendBestEffort: one user message in a packet of
// its own, nothing piggybacked.
func (s *sim) direct(from *node, to int, m *msg) {
	s.deliver(from, to, nil, []*msg{m}, false, false)
}

func (s *sim) other(nd *node) int {
	for {
		if j := s.rng.IntN(len(s.nodes)); j != nd.idx {
			return j
		}
	}
}

// gossip is memberlist's gossip round: up to GossipNodes peers, each a
// packet of what the queues give, stopping when they are empty.
func (s *sim) gossip(nd *node) {
	picked := map[int]bool{}
	for len(picked) < min(s.cfg.Memberlist.GossipNodes, len(s.nodes)-1) {
		picked[s.other(nd)] = true
	}
	for _, to := range slices.Sorted(maps.Keys(picked)) {
		msgs := s.broadcasts(nd, compoundEntry, s.udpRoom())
		if len(msgs) == 0 {
			return
		}
		s.deliver(nd, to, nil, msgs, true, false)
	}
}

func (s *sim) probe(nd *node) {
	to := s.other(nd)
	extra := s.broadcasts(nd, compoundEntry, s.udpRoom()-len(s.ping))
	s.deliver(nd, to, s.ping, extra, false, true)
}

// sample is mesh's sample tick: a report on change, a beat once per
// refresh otherwise; the summariser of a region also sends its summary.
func (s *sim) sample(nd *node) {
	self := &nd.held[nd.idx]
	switch {
	case nd.changed:
		nd.changed, nd.resend = false, s.cfg.Protocol == Proposed && s.cfg.Proposal.Resend
		nd.seq++
		nd.fullSeq, nd.fullVer = nd.seq, nd.ver
		*self = view{seq: nd.seq, full: nd.seq, ver: nd.ver, origin: s.now}
		nd.lastSend = s.now
		m := s.newMsg(&msg{kind: kReport, subject: nd.idx, seq: nd.seq, ver: nd.ver, origin: s.now}, nd.wire.Report)
		s.publish(nd, m, 0)
	case nd.resend:
		nd.resend = false
		m := s.newMsg(&msg{kind: kReport, subject: nd.idx, seq: nd.fullSeq, ver: nd.fullVer, origin: self.origin}, nd.wire.Report)
		s.publish(nd, m, 0)
	case s.now-nd.lastSend >= s.cfg.Mesh.Refresh:
		nd.seq++
		self.seq, self.origin = nd.seq, s.now
		nd.lastSend = s.now
		m := s.newMsg(&msg{kind: kBeat, subject: nd.idx, seq: nd.seq, base: nd.fullSeq, origin: s.now}, nd.wire.Beat)
		s.publish(nd, m, 1)
	}
	if s.cfg.Protocol == Proposed && nd.rank == 0 {
		s.summarise(nd)
		s.askLease(nd)
	}
}

// askLease is the leader's lease round, every Lease/4: an ask to each
// member, which answers with a grant.
func (s *sim) askLease(nd *node) {
	if s.now-nd.lastLease < s.cfg.Proposal.Lease/4 {
		return
	}
	nd.lastLease = s.now
	m := s.newMsg(&msg{kind: kLeaseAsk, subject: nd.idx}, nd.wire.LeaseAsk)
	for _, to := range s.members[nd.region] {
		if to != nd.idx {
			s.direct(nd, to, m)
		}
	}
}

// publish gossips a node's own report or beat (Current), or sends it to
// each other member of its region (Proposed).
func (s *sim) publish(nd *node, m *msg, q int) {
	if s.cfg.Protocol == Current {
		s.enqueue(nd, q, "n"+strconv.Itoa(nd.idx), m)
		return
	}
	for _, to := range s.members[nd.region] {
		if to != nd.idx {
			s.direct(nd, to, m)
		}
	}
}

// summarise is the proposed region summary: on change at most every
// SummaryMinGap, the first in full and the rest compact (membership does
// not change in the model); unchanged, a summary beat every
// SummaryRefresh.
func (s *sim) summarise(nd *node) {
	p := s.cfg.Proposal
	vers := s.regionVersions(nd)
	switch {
	case nd.sumSeq == 0 || !slices.Equal(vers, nd.summaryVers) && s.now-nd.lastSummary >= p.SummaryMinGap:
		kind, wire := kSummary, s.summary[nd.region]
		if nd.sumSeq > 0 {
			kind, wire = kSumCompact, s.compact[nd.region]
		}
		nd.sumSeq++
		nd.sumFull, nd.lastSummary, nd.lastSumSend, nd.summaryVers = nd.sumSeq, s.now, s.now, vers
		m := s.newMsg(&msg{kind: kind, subject: nd.region, seq: nd.sumSeq, origin: s.now, reflect: vers}, wire)
		nd.sums[nd.region] = view{seq: m.seq, full: m.seq, origin: s.now, reflect: vers, listed: true}
		s.enqueue(nd, 0, "s"+strconv.Itoa(nd.region), m)
	case s.now-nd.lastSumSend >= p.SummaryRefresh:
		nd.sumSeq++
		nd.lastSumSend = s.now
		m := s.newMsg(&msg{kind: kSumBeat, subject: nd.region, seq: nd.sumSeq, base: nd.sumFull, origin: s.now}, s.sumBeat[nd.region])
		v := &nd.sums[nd.region]
		v.seq, v.origin = m.seq, s.now
		s.enqueue(nd, 1, "s"+strconv.Itoa(nd.region), m)
	}
}

func (s *sim) regionVersions(nd *node) []int {
	out := make([]int, 0, len(s.members[nd.region]))
	for _, j := range s.members[nd.region] {
		out = append(out, nd.held[j].ver)
	}
	return out
}

func (s *sim) receive(nd *node, from int, msgs []*msg, gossiped bool) {
	for _, m := range msgs {
		switch m.kind {
		case kReport:
			s.takeReport(nd, m, gossiped && s.cfg.Protocol == Current)
		case kBeat:
			s.takeBeat(nd, m)
		case kSummary, kSumCompact:
			s.takeSummary(nd, m, gossiped)
		case kLeaseAsk:
			s.direct(nd, from, s.newMsg(&msg{kind: kLeaseGrant, subject: nd.idx}, nd.wire.LeaseGrant))
		case kSumBeat:
			s.takeSummaryBeat(nd, m)
		}
	}
}

func (s *sim) takeReport(nd *node, m *msg, relay bool) {
	v := &nd.held[m.subject]
	if m.subject == nd.idx || m.seq <= v.seq {
		return
	}
	v.seq, v.full, v.ver, v.origin = m.seq, m.seq, m.ver, m.origin
	s.seen(nd, m.subject, m.ver)
	if relay {
		s.enqueue(nd, 0, "n"+strconv.Itoa(m.subject), m)
	}
}

func (s *sim) takeBeat(nd *node, m *msg) {
	v := &nd.held[m.subject]
	if m.subject == nd.idx || m.seq <= v.seq {
		return
	}
	if v.full < m.base {
		s.repair(nd, s.nodes[m.subject])
		return
	}
	v.seq, v.origin = m.seq, m.origin
	if s.cfg.Protocol == Current {
		s.enqueue(nd, 1, "n"+strconv.Itoa(m.subject), m)
	}
}

// repair is mesh's want and answer, over TCP, each rate-limited.
func (s *sim) repair(asker, owner *node) {
	v := &asker.held[owner.idx]
	if s.now-v.wantAt < s.cfg.Mesh.Refresh {
		return
	}
	v.wantAt = s.now
	s.stream(ClassRepair, len(asker.wire.Want))
	a := &owner.held[asker.idx]
	if s.now-a.answerAt < s.cfg.Mesh.Refresh/2 {
		return
	}
	a.answerAt = s.now
	s.stream(ClassRepair, len(owner.wire.Answer))
	m := &msg{kind: kReport, subject: owner.idx, seq: owner.fullSeq, ver: owner.fullVer, origin: s.now}
	s.at(4*s.delay(asker, owner), &event{kind: evStream, node: asker.idx, from: owner.idx, msgs: []*msg{m}})
}

func (s *sim) stream(class string, bytes int) {
	if s.measuring() {
		s.tcp += int64(bytes)
		s.byClass[class] += float64(bytes)
	}
}

// takeSummary takes a full summary, or a compact one over the member list
// held; without the list, it asks the summariser for its summary, as for
// a summary beat whose base was missed.
func (s *sim) takeSummary(nd *node, m *msg, relay bool) {
	v := &nd.sums[m.subject]
	if m.kind == kSummary && m.seq > 0 { // a push/pull's seq 0: the peer holds none
		v.listed = true
	}
	if m.seq <= v.seq {
		return
	}
	if !v.listed {
		if nd.region != m.subject {
			s.fetchSummary(nd, m.subject)
		}
		return
	}
	v.seq, v.full, v.origin, v.reflect = m.seq, m.seq, m.origin, m.reflect
	if nd.region != m.subject {
		s.summarySeen(nd, m)
	}
	if relay {
		s.enqueue(nd, 0, "s"+strconv.Itoa(m.subject), m)
	}
}

// takeSummaryBeat is takeBeat for a region summary: a beat whose base we
// do not hold makes us ask the region's summariser for its summary,
// unless it is our own region's, whose reports we hold.
func (s *sim) takeSummaryBeat(nd *node, m *msg) {
	v := &nd.sums[m.subject]
	if m.seq <= v.seq {
		return
	}
	if v.full < m.base && nd.region == m.subject {
		return
	}
	if v.full < m.base {
		s.fetchSummary(nd, m.subject)
		return
	}
	v.seq, v.origin = m.seq, m.origin
	s.enqueue(nd, 1, "s"+strconv.Itoa(m.subject), m)
}

// pushPull is memberlist's anti-entropy: both sides send every member's
// state and our LocalState, and merge the other's without relaying.
func (s *sim) pushPull(nd *node) {
	peer := s.nodes[s.other(nd)]
	s.stream(ClassPushPull, s.stateSize(nd)+s.stateSize(peer))
	for _, pair := range [][2]*node{{nd, peer}, {peer, nd}} {
		var msgs []*msg
		to, from := pair[0], pair[1]
		for j := range s.nodes {
			if s.cfg.Protocol == Proposed && (s.nodes[j].region != to.region || from.region != to.region) {
				continue
			}
			v := from.held[j]
			msgs = append(msgs, &msg{kind: kReport, subject: j, seq: v.seq, ver: v.ver, origin: v.origin})
		}
		if s.cfg.Protocol == Proposed {
			for r := range s.cfg.Regions {
				v := from.sums[r]
				msgs = append(msgs, &msg{kind: kSummary, subject: r, seq: v.seq, origin: v.origin, reflect: v.reflect})
			}
		}
		s.at(4*s.delay(to, from), &event{kind: evStream, node: to.idx, from: from.idx, msgs: msgs})
	}
}

// stateSize is one side of a push/pull: memberlist's header and member
// states, then our state of every report (Current), or a bundle of our
// region's reports and every region's summary (Proposed).
func (s *sim) stateSize(nd *node) int {
	size := 40 + len(s.nodes)*s.nodeState
	report := len(nd.wire.Report) - 2 // without the message header
	if s.cfg.Protocol == Current {
		return size + len(s.nodes)*report
	}
	size += len(s.members[nd.region]) * (report + 4) // as a bundle item: length, kind, version
	for r := range s.cfg.Regions {
		size += len(s.summary[r]) + 2
	}
	return size
}

// fetchSummary is a want of a region's summary and its answer, in full,
// rate-limited as mesh's repairs are.
func (s *sim) fetchSummary(nd *node, region int) {
	v := &nd.sums[region]
	owner := s.nodes[s.members[region][0]]
	if s.now-v.wantAt < s.cfg.Proposal.SummaryRefresh {
		return
	}
	v.wantAt = s.now
	s.stream(ClassRepair, len(nd.wire.Want))
	s.stream(ClassRepair, len(s.summary[region]))
	held := owner.sums[region]
	a := &msg{kind: kSummary, subject: region, seq: owner.sumFull, origin: s.now, reflect: held.reflect}
	s.at(4*s.delay(nd, owner), &event{kind: evStream, node: nd.idx, from: owner.idx, msgs: []*msg{a}})
}

func (s *sim) startTrial(nd *node) {
	t := &trial{subject: nd.idx, ver: nd.ver, at: s.now, regionSeen: make([]bool, len(s.nodes)), fleetSeen: make([]bool, len(s.nodes))}
	t.regionSeen[nd.idx], t.fleetSeen[nd.idx] = true, true
	t.regionLeft, t.fleetLeft = len(s.members[nd.region])-1, len(s.nodes)-1
	s.trials = append(s.trials, t)
}

// seen records that nd holds version ver of subject's report.
func (s *sim) seen(nd *node, subject, ver int) {
	for _, t := range s.trials {
		if t.subject != subject || ver < t.ver {
			continue
		}
		sameRegion := nd.region == s.nodes[subject].region
		if sameRegion && !t.regionSeen[nd.idx] {
			t.regionSeen[nd.idx] = true
			if t.regionLeft--; t.regionLeft == 0 {
				t.regionDone = s.now - t.at
			}
		}
		if (s.cfg.Protocol == Current || sameRegion) && !t.fleetSeen[nd.idx] {
			s.markFleet(t, nd)
		}
	}
}

func (s *sim) summarySeen(nd *node, m *msg) {
	for _, t := range s.trials {
		sub := s.nodes[t.subject]
		if sub.region == m.subject && !t.fleetSeen[nd.idx] && m.reflect != nil && m.reflect[sub.rank] >= t.ver {
			s.markFleet(t, nd)
		}
	}
}

func (s *sim) markFleet(t *trial, nd *node) {
	t.fleetSeen[nd.idx] = true
	t.each = append(t.each, s.now-t.at)
	if t.fleetLeft--; t.fleetLeft == 0 {
		t.fleetDone = s.now - t.at
	}
}

// measure checks, once a second, who holds stale figures of whom, and
// which leader each node would pick.
func (s *sim) measure() {
	for _, nd := range s.nodes {
		leader := -1
		for _, j := range s.members[nd.region] {
			fresh := j == nd.idx || s.now-nd.held[j].origin <= s.cfg.Mesh.StaleAfter
			if j != nd.idx {
				s.checksRegion++
				if !fresh {
					s.staleRegion++
				}
			}
			if fresh && leader < 0 {
				leader = j
			}
		}
		if leader != nd.leader && s.now > s.cfg.Warmup {
			s.leaderChanges++
		}
		nd.leader = leader
		for r := range s.cfg.Regions {
			if r == nd.region {
				continue
			}
			n := int64(len(s.members[r]))
			s.checksFleet += n
			if s.cfg.Protocol == Proposed {
				if s.now-nd.sums[r].origin > s.cfg.Proposal.SummaryStale {
					s.staleFleet += n
				}
				continue
			}
			for _, j := range s.members[r] {
				if s.now-nd.held[j].origin > s.cfg.Mesh.StaleAfter {
					s.staleFleet++
				}
			}
		}
	}
}

func (s *sim) result() Result {
	secs := s.cfg.Duration.Seconds() * float64(len(s.nodes))
	res := Result{UDP: float64(s.udp) / secs, TCP: float64(s.tcp) / secs, LeaderChanges: s.leaderChanges, MaxQueue: s.maxQueue, ByClass: map[string]float64{}}
	for class, b := range s.byClass {
		res.ByClass[class] = b / secs
	}
	if s.checksRegion > 0 {
		res.StaleRegion = float64(s.staleRegion) / float64(s.checksRegion)
	}
	if s.checksFleet > 0 {
		res.StaleFleet = float64(s.staleFleet) / float64(s.checksFleet)
	}
	for _, t := range s.trials {
		if t.regionLeft == 0 {
			res.RegionSeen = append(res.RegionSeen, t.regionDone)
		} else {
			res.RegionMissed++
		}
		res.FleetEach = append(res.FleetEach, t.each...)
		if t.fleetLeft == 0 {
			res.FleetSeen = append(res.FleetSeen, t.fleetDone)
		} else {
			res.FleetMissed++
		}
	}
	return res
}
