package mesh

import (
	"fmt"
	"math"
	"testing"

	"perigee/mesh/faultnet"
)

// sendTo delivers msg from one cluster to another over memberlist's
// reliable (TCP) path, as any member holding the key can.
func sendTo(t *testing.T, from *node, to *node, msg []byte) {
	t.Helper()
	n, ok := nodeAt(to.meta.ID, to.addr)
	if !ok {
		t.Fatalf("no address for %s", to.meta.ID)
	}
	if err := from.ml.SendReliable(n, msg); err != nil {
		t.Fatal(err)
	}
}

// A member holding the key can send a report or a summary in another
// node's name (gossip does not say who sent a message). One naming the
// real sender's generation and the largest sequence was newer than
// anything its real sender would ever send, so it was kept for good: the
// node showed stale to its region, and the region stale to the whole
// fleet (the summary is relayed), until the forged sender restarted. A
// forgery may mislead for as long as it is fresh, and no longer.
func TestForgedSequenceDoesNotPinAReportOrASummary(t *testing.T) {
	nw := faultnet.New()
	ra := startCluster(t, nw, "ra", "ra", 2, nil)
	seed := []string{ra[0].addr}
	rb := startNode(t, nw, "rb-00", "rb", "127.0.0.1:0", seed, "")
	evil := startNode(t, nw, "zz-00", "zz", "127.0.0.1:0", seed, "")
	all := append(ra, rb, evil)
	eventuallyEach(t, "every node sees ra fresh", all, func(n *node) bool {
		v := n.Region("ra")
		return v.Fresh == 2 && v.Leader != ""
	})
	eventually(t, "ra-01 holds a fresh report of ra-00", func() bool { return allSee(ra[1:], "ra-00", 0) })

	// What the forger learns from gossip: the summary's sender and
	// generation, and ra-00's generation from its metadata.
	evil.mu.Lock()
	held := *evil.summaries["ra"].s
	gen := evil.peers["ra-00"].gen
	evil.mu.Unlock()
	forgedSum := held
	forgedSum.Seq, forgedSum.Age = math.MaxUint64, 0
	sendTo(t, evil, rb, encodeSummary(&forgedSum))
	forgedRep, err := encodeMessage(kindReport, []*report{{ID: "ra-00", Gen: gen, Seq: math.MaxUint64}})
	if err != nil {
		t.Fatal(err)
	}
	sendTo(t, evil, ra[1], forgedRep)

	heldSeqs := func() (sum, rep uint64) {
		rb.mu.Lock()
		sum = rb.summaries["ra"].s.Seq
		rb.mu.Unlock()
		ra[1].mu.Lock()
		rep = ra[1].peers["ra-00"].rep.Seq
		ra[1].mu.Unlock()
		return sum, rep
	}
	eventually(t, "the forgeries are taken", func() bool {
		sum, rep := heldSeqs()
		return sum == math.MaxUint64 && rep == math.MaxUint64
	})
	eventually(t, "the real sender's summary and report replace the forgeries once they are stale", func() bool {
		sum, rep := heldSeqs()
		return sum != math.MaxUint64 && rep != math.MaxUint64 && rb.Region("ra").Fresh == 2 && allSee(ra[1:], "ra-00", 0)
	})
}

// Reports of nodes memberlist has not shown us (one that outran its
// node's join) are held until the join comes. A member holding the key
// sending reports of 12,000 made-up ids filled the member table (10,000)
// with them, and every node that joined then was refused by it for good:
// memberlist tells of a join once.
func TestReportsOfUnknownNodesDoNotLockMembersOut(t *testing.T) {
	nw := faultnet.New()
	a := startNode(t, nw, "a-00", "eu", "127.0.0.1:0", nil, "")
	evil := startNode(t, nw, "zz-00", "zz", "127.0.0.1:0", []string{a.addr}, "")
	eventually(t, "a-00 sees zz-00", func() bool { _, ok := member(a.Cluster, "zz-00"); return ok })
	for batch := range 3 {
		var items [][]byte
		for i := range 4000 {
			msg, err := encodeMessage(kindReport, []*report{{ID: fmt.Sprintf("fake-%d-%d", batch, i), Gen: 1, Seq: 1}})
			if err != nil {
				t.Fatal(err)
			}
			items = append(items, msg)
		}
		sendTo(t, evil, a, encodeBundle(items))
	}
	eventually(t, "a-00 has taken or refused every made-up report", func() bool { return a.DroppedMessages() >= 2000 })
	a.mu.Lock()
	orphans := 0
	for _, p := range a.peers {
		if p.state == "" {
			orphans++
		}
	}
	a.mu.Unlock()
	if orphans > maxOrphans {
		t.Errorf("a-00 holds reports of %d nodes memberlist has not shown it, over %d", orphans, maxOrphans)
	}
	startNode(t, nw, "b-00", "eu", "127.0.0.1:0", []string{a.addr}, "")
	eventually(t, "a-00 shows b-00, which joined after the flood", func() bool { return allSee([]*node{a}, "b-00", 0) })
}

// Summaries are held one per region, at most maxSummaries. A member
// holding the key sending summaries of 1100 made-up regions filled the
// table, and the summary of a real region that started after was refused
// for as long as the flood was kept fresh: the rest of the fleet showed
// that region's members stale, and steered around it.
func TestSummariesOfUnknownRegionsDoNotLockRegionsOut(t *testing.T) {
	nw := faultnet.New()
	a := startNode(t, nw, "a-00", "eu", "127.0.0.1:0", nil, "")
	evil := startNode(t, nw, "zz-00", "zz", "127.0.0.1:0", []string{a.addr}, "")
	eventually(t, "a-00 sees zz-00", func() bool { _, ok := member(a.Cluster, "zz-00"); return ok })
	var items [][]byte
	for i := range maxSummaries + 100 {
		region := fmt.Sprintf("fake-%d", i)
		items = append(items, encodeSummary(&summary{Region: region, Sender: region + "-00", Gen: 1, Seq: 1,
			Members: []summaryMember{{ID: region + "-00", Fresh: true}}}))
	}
	sendTo(t, evil, a, encodeBundle(items))
	eventually(t, "a-00 has taken or refused every made-up summary", func() bool { return a.DroppedMessages() >= 100 })
	startNode(t, nw, "b-00", "us", "127.0.0.1:0", []string{a.addr}, "")
	eventually(t, "a-00 holds the summary of us, which started after the flood", func() bool {
		v := a.Region("us")
		return v.Summary && v.Fresh == 1
	})
}
