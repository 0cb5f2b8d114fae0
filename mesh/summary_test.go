package mesh

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"perigee/mesh/faultnet"
	"perigee/telemetry"
)

func sampleSummary() *summary {
	return &summary{Region: "eu-west", Sender: "pop-0001", Gen: 1 << 60, Seq: 77, Age: 1500 * time.Millisecond, Term: 1796000000,
		Capacity: 24, RPS: 1234.5, InFlight: 321, CPU: 2.5, Members: []summaryMember{
			{ID: "pop-0001", Fresh: true, Leads: true, InFlight: 300},
			{ID: "pop-0002", Fresh: false, Leaving: true, InFlight: -1},
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
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := decodeSummary(b); err == nil && (checkName("region", s.Region) != nil || len(s.Members) > maxSummaryRegn) {
			t.Fatalf("accepted bad summary %+v", s)
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
	p := &peer{state: StateAlive}
	c.peers["n0"] = p
	c.setMetaLocked("n0", p, NodeMeta{ID: "n0", Region: "us"})
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
