package mesh

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/mesh/faultnet"
	"perigee/telemetry"
)

func sampleSummary() *summary {
	return &summary{Region: "eu-west", Sender: "pop-0001", Gen: 1 << 60, Seq: 77, Age: 1500 * time.Millisecond, Term: 1796000000,
		Capacity: 24, RPS: 1234.5, InFlight: 321, CPU: 2.5, Members: []summaryMember{
			{ID: "pop-0001", Fresh: true, Leads: true, InFlight: 300},
			{ID: "pop-0002", Fresh: false, Leaving: true, InFlight: 4},
			{ID: "pop-0003", Fresh: true, InFlight: 21},
		}}
}

func TestSummaryRoundTripAndRejects(t *testing.T) {
	s := sampleSummary()
	b := encodeSummary(s)
	got, err := decodeSummary(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Region != s.Region || got.Sender != s.Sender || got.Gen != s.Gen || got.Seq != s.Seq || got.Age != s.Age || got.Term != s.Term ||
		got.Capacity != 24 || got.RPS != 1234.5 || got.InFlight != 321 || got.CPU != 2.5 || len(got.Members) != 3 || got.Members[1] != s.Members[1] {
		t.Errorf("round trip: %+v", got)
	}
	if id, term := got.leader(); id != "pop-0001" || term != s.Term {
		t.Errorf("leader %s/%d", id, term)
	}
	for i := range b {
		if _, err := decodeSummary(b[:i]); err == nil {
			t.Errorf("truncated at %d of %d accepted", i, len(b))
		}
	}
	bad := *s
	bad.Members = append([]summaryMember{{ID: "a b"}}, s.Members...)
	for _, m := range [][]byte{append(bytes.Clone(b), 0), encodeSummary(&bad), encodeSummary(&summary{Region: "", Sender: "x"})} {
		if _, err := decodeSummary(m); !errors.Is(err, errMalformed) {
			t.Errorf("decodeSummary(%x) = %v, want errMalformed", m, err)
		}
	}
	bt := sumBeat{Region: "eu", Sender: "n1", Gen: 3, Seq: 9, Base: 7, Age: time.Second}
	if got, err := decodeSumBeat(encodeSumBeat(bt)); err != nil || got != bt {
		t.Errorf("summary beat round trip: %+v, %v", got, err)
	}
}

// The summary of a large region with long ids still fits one gossip
// packet: it lists as many members as fit, and sums them all.
func TestSummaryOfALargeRegionFitsAPacket(t *testing.T) {
	now := time.Now()
	c := leaderCluster(now)
	for i := range 300 {
		id := fmt.Sprintf("%s-%03d", strings.Repeat("p", 60), i)
		c.addPeer(id, &peer{state: StateAlive, recv: now, rep: &report{ID: id, Gen: 1, Seq: 1, Sample: telemetry.NodeSample{RPS: 1, InFlight: 1 << 40}}}, "eu")
	}
	s := c.buildSummaryLocked(now)
	if n := len(encodeSummary(s)); n > maxSummaryBytes || len(s.Members) == 0 {
		t.Errorf("a summary of %d members is %d bytes, over %d", len(s.Members), n, maxSummaryBytes)
	}
	if s.RPS != 300 {
		t.Errorf("summed rps %v, want 300", s.RPS)
	}
}

func FuzzDecodeSummary(f *testing.F) {
	f.Add(encodeSummary(sampleSummary()))
	f.Add(encodeSumBeat(sumBeat{Region: "eu", Sender: "n1", Gen: 3, Seq: 9, Base: 7}))
	f.Add(encodeCompactSummary(sampleSummary()))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := decodeSummary(b); err == nil && (checkName("region", s.Region) != nil || len(s.Members) > maxSummaryRegn) {
			t.Fatalf("accepted bad summary %+v", s)
		}
		if s, _, err := decodeCompactSummary(b); err == nil && (checkName("id", s.Sender) != nil || len(s.Members) > maxSummaryRegn || len(s.Members) > len(b)) {
			t.Fatalf("accepted bad compact summary %+v", s)
		}
		if bt, err := decodeSumBeat(b); err == nil && bt.Base > bt.Seq {
			t.Fatalf("accepted bad summary beat %+v", bt)
		}
	})
}

func TestBundleRoundTripAndRejects(t *testing.T) {
	items := [][]byte{encodeSummary(sampleSummary()), encodeWant("n1")}
	b := encodeBundle(items)
	got, err := decodeBundle(b)
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], items[0]) || !bytes.Equal(got[1], items[1]) {
		t.Fatalf("round trip: %d items, %v", len(got), err)
	}
	for i := range b {
		if _, err := decodeBundle(b[:i]); err == nil {
			t.Errorf("truncated at %d of %d accepted", i, len(b))
		}
	}
	if _, err := decodeBundle(encodeBundle([][]byte{b})); !errors.Is(err, errMalformed) {
		t.Errorf("a bundle in a bundle: %v, want errMalformed", err)
	}
}

func FuzzDecodeBundle(f *testing.F) {
	f.Add(encodeBundle([][]byte{encodeSummary(sampleSummary()), encodeWant("n1")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if items, err := decodeBundle(b); err == nil {
			for _, it := range items {
				if len(it) < 2 || it[0] == kindBundle {
					t.Fatalf("accepted bad item %x", it)
				}
			}
		}
	})
}

func FuzzDecodeLease(f *testing.F) {
	f.Add(encodeLease(kindLeaseAsk, leaseMsg{From: "n1", Term: 5, Round: 9}))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, k := range []byte{kindLeaseAsk, kindLeaseGrant} {
			if m, err := decodeLease(k, b); err == nil && checkName("id", m.From) != nil {
				t.Fatalf("accepted bad lease sender %q", m.From)
			}
		}
	})
}

// Which of two summaries of a region a node keeps.
func TestSummaryReplacement(t *testing.T) {
	now := time.Now()
	c := beatCluster() // n1 alive
	addPeer(c, "n0", "us", "")
	held := &summary{Region: "us", Sender: "n1", Gen: 7, Seq: 5, Term: 10, Members: []summaryMember{{ID: "n1", Leads: true}}}
	h := holdSummary(held, now)
	for _, tc := range []struct {
		what string
		s    summary
		want bool
	}{
		{"later of the same sender", summary{Sender: "n1", Gen: 7, Seq: 6}, true},
		{"earlier of the same sender", summary{Sender: "n1", Gen: 7, Seq: 4, Term: 99}, false},
		{"another sender, not leading, lower id", summary{Sender: "n0", Gen: 1, Seq: 9, Term: 10}, false},
		{"another sender leading under a higher term", summary{Sender: "n0", Gen: 1, Seq: 1, Term: 11, Members: []summaryMember{{ID: "n0", Leads: true}}}, true},
		{"another sender leading under a lower term", summary{Sender: "n0", Gen: 1, Seq: 1, Term: 9, Members: []summaryMember{{ID: "n0", Leads: true}}}, false},
	} {
		if got := c.replacedByLocked(h, &tc.s, now); got != tc.want {
			t.Errorf("%s: replaces = %v, want %v", tc.what, got, tc.want)
		}
	}
	if !c.replacedByLocked(h, &summary{Sender: "n0", Gen: 1}, now.Add(2*fastTiming.SummaryStale)) {
		t.Error("a stale summary was not replaced by another sender's")
	}
	c.peers["n1"].state = StateDead
	if !c.replacedByLocked(h, &summary{Sender: "n0", Gen: 1}, now) {
		t.Error("a dead sender's summary was not replaced")
	}
}

// A member grants a lease to one node per term, never to a term below
// the highest it knows, and a grant counts only for a round we asked.
func TestLeaseGrantRules(t *testing.T) {
	now := time.Now()
	c := leaderCluster(now) // b, with a and c
	for _, id := range []string{"a", "c"} {
		c.peers[id].addr = "127.0.0.1:1"
	}
	c.term = 5
	c.grantLease(leaseMsg{From: "a", Term: 4, Round: 1}, now)
	if len(c.outbox) != 0 {
		t.Fatal("granted a term below the highest known")
	}
	c.grantLease(leaseMsg{From: "a", Term: 6, Round: 1}, now)
	if len(c.outbox) != 1 || c.term != 6 {
		t.Fatalf("no grant for a later term (%d queued), or the term %d not learned", len(c.outbox), c.term)
	}
	if m, err := decodeLease(kindLeaseGrant, (<-c.outbox).msg); err != nil || m.From != "b" || m.Term != 6 || m.Round != 1 {
		t.Errorf("grant %+v, %v", m, err)
	}
	c.grantLease(leaseMsg{From: "c", Term: 6, Round: 1}, now)
	if len(c.outbox) != 0 {
		t.Error("granted a second node the same term")
	}
	c.grantLease(leaseMsg{From: "stranger", Term: 9, Round: 1}, now)
	if len(c.outbox) != 0 {
		t.Error("granted a node that is not a member of the region")
	}

	// b leads under 7: a grant of an unknown round, or another term, is not counted.
	c.lead, c.term = 7, 7
	c.restartLeaseLocked()
	c.askLeaseLocked(now)
	c.takeGrant(leaseMsg{From: "a", Term: 7, Round: 99}, now)
	c.takeGrant(leaseMsg{From: "c", Term: 6, Round: c.lease.round}, now)
	if c.leaseHeldLocked(now) {
		t.Fatal("lease held on grants of no round we asked")
	}
	c.takeGrant(leaseMsg{From: "a", Term: 7, Round: c.lease.round}, now)
	if !c.leaseHeldLocked(now) || c.leaseValidLocked(now) {
		t.Fatalf("two of three: held %v, valid at once %v; want held, not valid before the wait", c.leaseHeldLocked(now), c.leaseValidLocked(now))
	}
	if later := now.Add(c.leaseWait()); c.leaseValidLocked(later) {
		t.Error("the lease still valid a wait later, with no grant since")
	}
}

// Three regions of three: a load change reaches its own region in its
// reports, and the other regions in its region's summary, whose leader
// they show too; no node of another region holds the member's reports.
func TestRegionSummaryReachesOtherRegions(t *testing.T) {
	nw := faultnet.New()
	var nodes []*node
	var seed []string
	for _, r := range []string{"ra", "rb", "rc"} {
		region := startCluster(t, nw, r, r, 3, seed)
		if seed == nil {
			seed = []string{region[0].addr}
		}
		nodes = append(nodes, region...)
	}
	eventually(t, "every region led and summarised everywhere", func() bool {
		for _, n := range nodes {
			for _, r := range []string{"ra", "rb", "rc"} {
				if v := n.Region(r); v.Leader == "" || v.Fresh != 3 || (r != n.meta.Region) != v.Summary {
					return false
				}
			}
		}
		return true
	})
	nodes[1].rps.Store(70) // ra-01
	eventually(t, "the change seen by its region and in ra's summary everywhere", func() bool {
		for _, n := range nodes {
			v := n.Region("ra")
			if v.RPS != 70 {
				return false
			}
		}
		return allSee(nodes[:3], "ra-01", 70)
	})
	lead := nodes[0].Region("ra").Leader
	for _, n := range nodes[3:] {
		m, ok := member(n.Cluster, "ra-01")
		if !ok || m.State != StateAlive || m.Stale || !m.HasReport {
			t.Errorf("%s sees ra-01 as %+v", n.meta.ID, m)
		}
		if m.Report.RPS != 0 {
			t.Errorf("%s holds ra-01's own figures (rps %v): reports went beyond the region", n.meta.ID, m.Report.RPS)
		}
		if v := n.Region("ra"); v.Leader != lead {
			t.Errorf("%s shows ra led by %q, ra itself by %q", n.meta.ID, v.Leader, lead)
		}
	}
	if d := nodes[4].DroppedMessages() + nodes[4].UnknownMessages(); d != 0 {
		t.Errorf("%d messages dropped or skipped", d)
	}
}

// One member of ten doubling its load moves the region's sums by 10%:
// that must send a new summary, while jitter below what reports send
// cannot reach the sums at all.
func TestSummaryMovesWithOneMemberOfTen(t *testing.T) {
	old := &summary{RPS: 10000, InFlight: 100, CPU: 5}
	cur := *old
	cur.RPS = 10990 // ten members at 1000, one at 2000, jittered down 1%
	if !summaryMoved(old, &cur) {
		t.Error("a region's sums up 9.9% did not move its summary")
	}
	cur.RPS = 10300
	if summaryMoved(old, &cur) {
		t.Error("a region's sums up 3% moved its summary")
	}
}

func TestCompactSummaryRoundTripAndRejects(t *testing.T) {
	s := sampleSummary()
	list := memberList(s.Members)
	b := encodeCompactSummary(s)
	if full := encodeSummary(s); len(b) >= len(full) {
		t.Errorf("compact summary %d bytes, the full one %d", len(b), len(full))
	}
	got, gotList, err := decodeCompactSummary(b)
	if err != nil {
		t.Fatal(err)
	}
	if gotList != list || got.Region != s.Region || got.Sender != s.Sender || got.Gen != s.Gen || got.Seq != s.Seq || got.Age != s.Age ||
		got.Term != s.Term || got.Capacity != 24 || got.RPS != 1234.5 || got.InFlight != 321 || got.CPU != 2.5 || len(got.Members) != 3 {
		t.Fatalf("round trip: %+v, list %x want %x", got, gotList, list)
	}
	for i, m := range got.Members {
		want := s.Members[i]
		want.ID = ""
		if m != want {
			t.Errorf("member %d: %+v, want %+v", i, m, want)
		}
	}
	for i := range b {
		if _, _, err := decodeCompactSummary(b[:i]); err == nil {
			t.Errorf("truncated at %d of %d accepted", i, len(b))
		}
	}
	bad := bytes.Clone(b)
	bad[len(bad)-2] = 0x80 // the last member's flags
	for _, m := range [][]byte{append(bytes.Clone(b), 0), bad, encodeSummary(s)} {
		if _, _, err := decodeCompactSummary(m); !errors.Is(err, errMalformed) {
			t.Errorf("decodeCompactSummary(%x) = %v, want errMalformed", m, err)
		}
	}
	if other := memberList([]summaryMember{{ID: "pop-0001"}, {ID: "pop-0003"}, {ID: "pop-0002"}}); other == list {
		t.Error("two orders of one member set share a list digest")
	}
}

// summariser is b of leaderCluster summarising its region: a is dead,
// so b is the lowest eligible id.
func summariser(now time.Time) *Cluster {
	c := leaderCluster(now)
	c.peers["a"].state = StateDead
	c.queue = newBroadcastQueue(1, c.numNodes)
	c.beats = newBroadcastQueue(1, c.numNodes)
	return c
}

func queued(t *testing.T, c *Cluster) []byte {
	t.Helper()
	out := c.queue.GetBroadcasts(0, 1400)
	if len(out) != 1 {
		t.Fatalf("%d summaries queued, want 1", len(out))
	}
	return out[0]
}

// A region whose members are those of its last summary sends the next
// one compact: flags and in-flight counts by position, not the ids again.
func TestUnchangedMembersSentCompact(t *testing.T) {
	now := time.Now()
	c := summariser(now)
	c.summarise(now)
	if b := queued(t, c); b[0] != kindSummary {
		t.Fatalf("first summary of kind %d, want a full one", b[0])
	}
	move := func(id string, rps float64) {
		rep := *c.peers[id].rep
		rep.Seq++
		rep.Sample.RPS = rps
		c.peers[id].rep, c.peers[id].recv = &rep, now
	}
	move("c", 500)
	now = now.Add(c.timing.SummaryGap)
	c.summarise(now)
	b := queued(t, c)
	s, list, err := decodeCompactSummary(b)
	if err != nil || s.RPS != 500 || len(s.Members) != 2 || list != memberList(c.mySum.Members) {
		t.Fatalf("second summary %x: %+v, %v; want a compact one of 2 members, rps 500", b, s, err)
	}
	c.addPeer("d", &peer{state: StateAlive, recv: now, rep: &report{ID: "d", Gen: 1, Seq: 1}}, "eu")
	move("c", 900)
	now = now.Add(c.timing.SummaryGap)
	c.summarise(now)
	if b := queued(t, c); b[0] != kindSummary {
		t.Fatalf("a summary after a member joined of kind %d, want a full one", b[0])
	}
}

// A compact summary counts only over the member list it was made from;
// a node that does not hold that list asks the sender for its summary.
func TestCompactSummaryNeedsItsList(t *testing.T) {
	now := time.Now()
	c := beatCluster() // self and n1 of eu
	addPeer(c, "u1", "us", "127.0.0.1:2")
	full := &summary{Region: "us", Sender: "u1", Gen: 4, Seq: 10, Term: 2, RPS: 100, Members: []summaryMember{{ID: "u1", Fresh: true, Leads: true, InFlight: 3}, {ID: "u2", Fresh: true}}}
	c.mergeSummary(full, false, now)
	next := *full
	next.Seq, next.RPS = 11, 250
	next.Members = []summaryMember{{ID: "u1", Fresh: true, Leads: true, InFlight: 40}, {ID: "u2", Fresh: false}}
	c.handle(encodeCompactSummary(&next), true, now)
	h := c.summaries["us"]
	if h.s.Seq != 11 || h.s.RPS != 250 || h.s.Members[0].ID != "u1" || h.s.Members[0].InFlight != 40 || h.s.Members[1].ID != "u2" || h.s.Members[1].Fresh {
		t.Fatalf("after a compact summary over the held list: %+v", h.s)
	}
	if out := c.queue.GetBroadcasts(0, 1400); len(out) != 1 || out[0][0] != kindSumCompact {
		t.Fatalf("relayed %d messages, want the compact summary as it came", len(out))
	}
	c.queue.Reset()
	other := next
	other.Seq = 12
	other.Members = []summaryMember{{ID: "u1", Leads: true}, {ID: "u3"}}
	c.handle(encodeCompactSummary(&other), true, now)
	if h := c.summaries["us"]; h.s.Seq != 11 {
		t.Errorf("a compact summary over another list was taken: %+v", h.s)
	}
	if n := c.queue.NumQueued(); n != 0 {
		t.Errorf("a compact summary we cannot read was relayed (%d queued)", n)
	}
	if len(c.streams) != 1 {
		t.Fatalf("%d repairs asked, want 1", len(c.streams))
	}
	if from, err := decodeWant((<-c.streams).msg); err != nil || from != "self" {
		t.Errorf("repair %q, %v", from, err)
	}
	if c.DroppedMessages()+c.UnknownMessages() != 0 {
		t.Errorf("%d dropped, %d unknown", c.DroppedMessages(), c.UnknownMessages())
	}
}

// A summary that lists a member memberlist never showed us (its alive
// message missed us, and push/pull is minutes apart) makes us push/pull
// with the summary's sender, once per member list it has held for a
// rejoin interval.
func TestSummaryListingAnUnknownMemberSyncsWithItsSender(t *testing.T) {
	now := time.Now()
	c := beatCluster() // self and n1 of eu
	addPeer(c, "u1", "us", "127.0.0.1:2")
	known := &summary{Region: "us", Sender: "u1", Gen: 4, Seq: 10, Members: []summaryMember{{ID: "u1", Leads: true}}}
	c.mergeSummary(known, false, now)
	later := now.Add(c.timing.Rejoin)
	if addr := c.syncAddr(later); addr != "" {
		t.Fatalf("synced with %s although every listed member is known", addr)
	}
	more := *known
	more.Seq, more.Members = 11, []summaryMember{{ID: "u1", Leads: true}, {ID: "u2"}}
	c.mergeSummary(&more, false, now)
	if addr := c.syncAddr(now); addr != "" {
		t.Fatalf("synced with %s at once: the member's alive message may still be on its way", addr)
	}
	if addr := c.syncAddr(later); addr != "127.0.0.1:2" {
		t.Fatalf("sync address %q a rejoin interval later, want the sender's", addr)
	}
	next := more
	next.Seq = 12
	c.mergeSummary(&next, false, later)
	if addr := c.syncAddr(later.Add(time.Hour)); addr != "" {
		t.Errorf("synced again (%s) over the same member list", addr)
	}
	// The sender itself is the member we missed: a listed member we know
	// serves as well.
	c.mergeSummary(&summary{Region: "as", Sender: "a9", Gen: 1, Seq: 1, Members: []summaryMember{{ID: "a9", Leads: true}, {ID: "u1"}}}, false, now)
	if addr := c.syncAddr(later); addr != "127.0.0.1:2" {
		t.Errorf("sync address %q for a summary from a sender we do not know, want u1's", addr)
	}
}

// End to end: rb-00 misses ra-01's alive message, with push/pull an hour
// apart, and still comes to know ra-01 from ra's summary.
func TestMemberMissedByGossipFoundThroughSummaries(t *testing.T) {
	nw := faultnet.New()
	cfg := func(join []string) Config {
		return Config{Join: join, Tuning: func(mc *memberlist.Config) {
			fastTuning(mc)
			mc.PushPullInterval = time.Hour
		}}
	}
	a := startNodeWith(t, nw, "ra-00", "ra", "127.0.0.1:0", cfg(nil))
	b := startNodeWith(t, nw, "rb-00", "rb", "127.0.0.1:0", cfg([]string{a.addr}))
	eventually(t, "rb-00 holds ra's summary", func() bool { return b.Region("ra").Summary })
	nw.Block([]string{faultnet.Any}, []string{"rb-00"})
	startNodeWith(t, nw, "ra-01", "ra", "127.0.0.1:0", cfg([]string{a.addr}))
	eventually(t, "ra-00 sees ra-01", func() bool { _, ok := member(a.Cluster, "ra-01"); return ok })
	time.Sleep(time.Second) // ra-01's alive message has been sent its times
	nw.Heal()
	eventually(t, "rb-00 sees ra-01", func() bool { m, ok := member(b.Cluster, "ra-01"); return ok && m.State != StateDead })
}

// Many nodes of other regions asking for our summary at once (they all
// missed it) are served by gossiping it again in full: a TCP answer to
// each would overflow the stream queue, and the rest would wait for
// beat after beat.
func TestManyWantsOfASummaryRegossipIt(t *testing.T) {
	now := time.Now()
	c := summariser(now)
	c.summarise(now)
	queued(t, c) // the first summary, sent
	c.lastSent = c.peers["b"].rep
	for i := range summaryWantsToRegossip {
		id := fmt.Sprintf("u%d", i)
		c.addPeer(id, &peer{state: StateAlive, addr: fmt.Sprintf("127.0.0.1:%d", 10+i)}, "us")
		c.answerWant(id, now)
		if i < summaryWantsToRegossip-1 && c.queue.NumQueued() > 1 {
			t.Fatalf("summary gossiped again after %d wants", i+1)
		}
	}
	b := queued(t, c)
	if s, err := decodeSummary(b); err != nil || s.Seq != c.sumSeq || len(s.Members) != 2 {
		t.Fatalf("gossiped again: %+v, %v; want the full summary at seq %d", s, err, c.sumSeq)
	}
	if len(c.streams) != summaryWantsToRegossip {
		t.Errorf("%d direct answers, want one to each asker as well", len(c.streams))
	}
}

// A node's capacity is a relative weight its metadata gives, and a
// region's summary carries their sum, which receivers take up to 2^31-1.
// One member announcing 2^31-1 beside another made a sum every other
// region refused as malformed, so the region showed stale fleet-wide for
// as long as that member was in it; and metadata up to 2^63 wrapped the
// sum. A capacity is bounded, and a region's sum saturates.
func TestLargeCapacitiesKeepTheSummaryReadable(t *testing.T) {
	now := time.Now()
	c := summariser(now)
	huge := NodeMeta{ID: "c", Region: "eu", Capacity: math.MaxInt64}
	if huge.Validate() == nil {
		t.Errorf("metadata with capacity 2^63-1 validated")
	}
	c.peers["b"].meta.Capacity = 1
	c.peers["c"].meta.Capacity = math.MaxInt32
	c.summarise(now)
	s, err := decodeSummary(queued(t, c))
	if err != nil {
		t.Fatalf("the region's summary does not decode: %v", err)
	}
	if s.Capacity != math.MaxInt32 {
		t.Errorf("summary capacity %d, want it saturated at %d", s.Capacity, math.MaxInt32)
	}
}

// Rates and CPU travel as float32, which each member's report may fill:
// two members announcing the largest rate summed to one a float32 cannot
// hold, +Inf, and every other region refused the summary, showing the
// region stale fleet-wide.
func TestLargeRatesKeepTheSummaryReadable(t *testing.T) {
	now := time.Now()
	c := summariser(now)
	for _, id := range []string{"b", "c"} {
		c.peers[id].rep.Sample = telemetry.NodeSample{RPS: math.MaxFloat32, CPU: math.MaxFloat32}
	}
	c.summarise(now)
	s, err := decodeSummary(queued(t, c))
	if err != nil {
		t.Fatalf("the region's summary does not decode: %v", err)
	}
	if s.RPS != math.MaxFloat32 || s.CPU != math.MaxFloat32 {
		t.Errorf("summary rps %g, cpu %g, want them saturated at %g", s.RPS, s.CPU, math.MaxFloat32)
	}
}
