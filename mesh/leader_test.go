package mesh

import (
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/mesh/faultnet"
	"perigee/telemetry"
)

// claims samples every node's Leadership until stopped, recording who
// claimed each term and the order terms were first claimed in.
type claims struct {
	mu      sync.Mutex
	holders map[uint64][]string
	order   []uint64
	stop    chan struct{}
	done    chan struct{}
}

func watchClaims(nodes []*node) *claims {
	c := &claims{holders: map[uint64][]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			for _, n := range nodes {
				if term, ok := n.Leadership(); ok {
					c.record(n.meta.ID, term)
				}
			}
		}
	}()
	return c
}

// record notes that id claimed term.
func (c *claims) record(id string, term uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, seen := c.holders[term]; !seen {
		c.order = append(c.order, term)
	}
	if !slices.Contains(c.holders[term], id) {
		c.holders[term] = append(c.holders[term], id)
	}
}

// check stops the sampler and fails on a term claimed by two nodes, or a
// term first claimed after a higher one.
func (c *claims) check(t *testing.T) {
	t.Helper()
	close(c.stop)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	for term, ids := range c.holders {
		if len(ids) > 1 {
			t.Errorf("term %d claimed by %v", term, ids)
		}
	}
	for i := 1; i < len(c.order); i++ {
		if c.order[i] <= c.order[i-1] {
			t.Errorf("terms claimed in the order %v: not strictly increasing", c.order)
			break
		}
	}
	t.Logf("terms claimed, in order: %v, by %v", c.order, c.holders)
}

// leading lists the nodes whose Leadership holds now, with their terms.
func leading(nodes []*node) map[string]uint64 {
	out := map[string]uint64{}
	for _, n := range nodes {
		if term, ok := n.Leadership(); ok {
			out[n.meta.ID] = term
		}
	}
	return out
}

// oneLeader waits until exactly one of nodes leads, and returns it and
// its term.
func oneLeader(t *testing.T, what string, nodes []*node) (string, uint64) {
	t.Helper()
	var id string
	var term uint64
	eventually(t, what, func() bool {
		l := leading(nodes)
		if len(l) != 1 {
			return false
		}
		for id, term = range l {
		}
		return true
	})
	return id, term
}

// A region of five split 3/2 with its leader on the small side: the
// leader stops leading, the large side elects one under a higher term,
// and the small side never leads while it sees only a minority. After
// healing, one leader remains and no term was ever claimed twice.
func TestPartitionOnlyMajorityLeads(t *testing.T) {
	nw := faultnet.New()
	nodes := startCluster(t, nw, "q", "eu", 5, nil)
	eventually(t, "converged", func() bool { return allSee(nodes, "q-04", 0) && allSee(nodes, "q-00", 0) })
	first, before := oneLeader(t, "one leader", nodes)
	if first != "q-00" {
		t.Fatalf("leader %s, want q-00, the first node", first)
	}
	cl := watchClaims(nodes)
	small, large := nodes[:2], nodes[2:]
	nw.Partition([]string{"q-00", "q-01"}, []string{"q-02", "q-03", "q-04"})
	var id string
	var term uint64
	eventually(t, "the large side leads alone", func() bool {
		l := leading(nodes)
		for id, term = range l {
		}
		return len(l) == 1 && slices.Contains([]string{"q-02", "q-03", "q-04"}, id)
	})
	if term <= before {
		t.Fatalf("after the split %s leads under term %d, not above q-00's %d", id, term, before)
	}
	// Held for a while: the small side still knows it is the smaller part.
	for range 30 {
		if l := leading(small); len(l) > 0 {
			t.Fatalf("the minority side leads: %v", l)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if l := leading(large); len(l) != 1 {
		t.Errorf("the majority side's leaders: %v, want one", l)
	}
	nw.Heal()
	eventually(t, "healed: everyone alive", func() bool {
		for _, n := range nodes {
			if !allState(nodes, n.meta.ID, StateAlive) || !allSee(nodes, n.meta.ID, 0) {
				return false
			}
		}
		return true
	})
	_, after := oneLeader(t, "one leader after healing", nodes)
	if after < term {
		t.Errorf("after healing the leader holds term %d, below the large side's %d", after, term)
	}
	cl.check(t)
}

// The leader stops for 20 s (all its traffic dropped, as a SIGSTOPped
// process looks) and resumes. Another node leads meanwhile; terms only
// ever increase and no term has two holders, before, during or after.
func TestPausedLeaderResumesWithoutReusingATerm(t *testing.T) {
	nw := faultnet.New()
	nodes := startCluster(t, nw, "s", "eu", 5, nil)
	eventually(t, "converged", func() bool { return allSee(nodes, "s-04", 0) && allSee(nodes, "s-00", 0) })
	first, before := oneLeader(t, "one leader", nodes)
	cl := watchClaims(nodes)
	var paused *node
	for _, n := range nodes {
		if n.meta.ID == first {
			paused = n
		}
	}
	others := slices.DeleteFunc(slices.Clone(nodes), func(n *node) bool { return n == paused })
	nw.Isolate(first)
	start := time.Now()
	next, during := oneLeader(t, "another node leads during the pause", others)
	if during <= before {
		t.Errorf("%s leads under term %d during the pause, not above %s's %d", next, during, first, before)
	}
	time.Sleep(time.Until(start.Add(20 * time.Second)))
	nw.Heal()
	eventually(t, "resumed: the paused node alive again everywhere", func() bool {
		return allState(nodes, first, StateAlive) && allSee(others, first, 0)
	})
	_, after := oneLeader(t, "one leader after the pause", nodes)
	if after < during {
		t.Errorf("after the pause the leader holds term %d, below %d", after, during)
	}
	// The paused node learns it lost the lead: the term it knows moves on
	// (one node claiming the lead says nothing yet of what it has heard).
	eventually(t, fmt.Sprintf("%s's view after resuming shows a term of at least %d", first, during), func() bool {
		return paused.Region("eu").Term >= during
	})
	cl.check(t)
}

// A node that cannot reach its seeds does not lead its region, and a
// node that joins later with a lower id does not take the lead from a
// leader that is alive.
func TestLoneNodeDoesNotLeadAndLeadIsSticky(t *testing.T) {
	nw := faultnet.New()
	nodes := startCluster(t, nw, "t-1", "eu", 2, nil) // t-1-00, t-1-01
	_, term := oneLeader(t, "one leader", nodes)
	lone := startNode(t, nw, "t-0-lone", "eu", "127.0.0.1:0", []string{"127.0.0.1:1"}, "")
	time.Sleep(10 * fastTiming.Sample)
	if term, ok := lone.Leadership(); ok {
		t.Errorf("a node alone, its seed unreachable, leads under term %d", term)
	}
	low := startNode(t, nw, "t-0", "eu", "127.0.0.1:0", []string{nodes[0].addr}, "")
	all := append(slices.Clone(nodes), low)
	eventually(t, "t-0 joined", func() bool { return allSee(all, "t-0", 0) })
	for range 20 {
		if l := leading(all); len(l) != 1 || l["t-1-00"] != term {
			t.Fatalf("leaders %v; want t-1-00 still, under term %d", l, term)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v := low.Region("eu"); v.Leader != "t-1-00" || v.Term != term {
		t.Errorf("t-0 sees leader %s under term %d, want t-1-00 under %d", v.Leader, v.Term, term)
	}
}

// leaderCluster is a Cluster without memberlist: b of region eu, with
// peers a and c alive and fresh, none leading yet.
func leaderCluster(now time.Time) *Cluster {
	c := &Cluster{
		meta: NodeMeta{ID: "b", Region: "eu"}, timing: fastTiming, log: slog.New(slog.DiscardHandler),
		peers: map[string]*peer{}, roster: map[string]time.Time{}, leaders: map[string]leaderTerm{},
		regions: map[string]map[string]*peer{}, summaries: map[string]*heldSummary{},
		events: newEventQueue("b", 16), outbox: make(chan direct, outboxSize), streams: make(chan direct, streamsSize),
	}
	c.coords, _ = newCoordClient()
	c.timing.Remember = time.Minute
	for _, id := range []string{"a", "b", "c"} {
		c.addPeer(id, &peer{state: StateAlive, recv: now, rep: &report{ID: id, Gen: 1, Seq: 1}}, "eu")
	}
	c.alive.Store(3)
	return c
}

func (c *Cluster) addPeer(id string, p *peer, region string) {
	c.peers[id] = p
	c.setMetaLocked(id, p, NodeMeta{ID: id, Region: region})
}

func (c *Cluster) setClaim(id string, term uint64, leads bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[id]
	rep := *p.rep
	rep.Seq++
	rep.Term, rep.Leads = term, leads
	p.rep = &rep
	if rep.Term > c.term {
		c.term = rep.Term
	}
}

// confirmLease has every member of b's region grant its lease, long
// enough ago that it may act: what the lease rounds do over the network.
func (c *Cluster) confirmLease(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lease.granted == nil {
		c.restartLeaseLocked()
	}
	for id := range c.regions[c.meta.Region] {
		c.lease.granted[id] = now
	}
	c.lease.since = now.Add(-c.leaseWait())
}

func (c *Cluster) setState(id string, s State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.peers[id].state = s
}

// The rules of leader.go, one step at a time.
func TestLeadershipRules(t *testing.T) {
	now := time.Now()
	c := leaderCluster(now)
	c.tendLeadership(now)
	c.confirmLease(now)
	if _, ok := c.Leadership(); ok {
		t.Fatal("b leads although a, the lowest id, is eligible")
	}
	c.setClaim("a", 5, true)
	c.setState("a", StateDead)
	c.tendLeadership(now)
	c.confirmLease(now)
	t1, ok := c.Leadership()
	if !ok || t1 <= 5 {
		t.Fatalf("with a dead, b leads = %v under term %d; want a term above a's 5", ok, t1)
	}
	if v := c.Region("eu"); v.Leader != "b" || v.Term != t1 {
		t.Errorf("region view %s/%d, want b/%d", v.Leader, v.Term, t1)
	}

	// a returns, still claiming its old term: b keeps the lead.
	c.setState("a", StateAlive)
	c.tendLeadership(now)
	c.confirmLease(now)
	if term, ok := c.Leadership(); !ok || term != t1 {
		t.Errorf("a back under an old term: b leads = %v, term %d; want still %d", ok, term, t1)
	}

	// c took a higher term (b was cut off, say): b is deposed at once.
	c.setClaim("c", t1+1, true)
	if _, ok := c.Leadership(); ok {
		t.Error("b still leads after c claimed a higher term")
	}
	c.tendLeadership(now)
	c.confirmLease(now)
	if v := c.Region("eu"); v.Leader != "c" || c.lead != 0 {
		t.Errorf("leader %s, b's lead %d; want c, 0", v.Leader, c.lead)
	}

	// c gives the lead up: b, picked again, takes a new term above all.
	c.setClaim("c", t1+1, false)
	c.setState("a", StateLeft)
	c.tendLeadership(now)
	c.confirmLease(now)
	t2, ok := c.Leadership()
	if !ok || t2 <= t1+1 {
		t.Fatalf("b leads again = %v under term %d; want a new term above %d", ok, t2, t1+1)
	}

	// Another node claiming our very term: nobody should act under it.
	c.setClaim("c", t2, true)
	if _, ok := c.Leadership(); ok {
		t.Error("b leads while c claims the same term")
	}
	c.setClaim("c", t2, false)
	c.tendLeadership(now)
	c.confirmLease(now)

	// A majority of the remembered members is needed: a left (does not
	// count), c failing leaves b with one of two.
	t3, ok := c.Leadership()
	if !ok {
		t.Fatal("b does not lead b and c")
	}
	c.setState("c", StateDead)
	if _, ok := c.Leadership(); ok {
		t.Error("b leads seeing one of two members")
	}
	c.tendLeadership(now)
	c.confirmLease(now)
	// Once c is no longer remembered, b is the region, under a new term.
	later := now.Add(2 * time.Minute)
	c.mu.Lock()
	c.peers["b"].recv = later
	c.mu.Unlock()
	c.tendLeadership(later)
	if c.lead <= t3 {
		t.Errorf("after c was forgotten b leads under %d; want a new term above %d", c.lead, t3)
	}

	// Leaving: no lead, and the last report says so, so the next node
	// need not wait for this one to be declared gone.
	c.mu.Lock()
	c.leaving, c.dirty = true, true
	c.mu.Unlock()
	if _, ok := c.Leadership(); ok {
		t.Error("a leaving node leads")
	}
	c.report = func() telemetry.NodeSample { return telemetry.NodeSample{} }
	c.queue = &memberlist.TransmitLimitedQueue{RetransmitMult: 1, NumNodes: c.numNodes}
	c.sample(later)
	if c.lastSent.Leads || !c.lastSent.Leaving {
		t.Errorf("the leaving report: leads %v, leaving %v; want false, true", c.lastSent.Leads, c.lastSent.Leaving)
	}

	// Alone with seeds to reach: no lead at all.
	c.cfg.Join = []string{"127.0.0.1:1"}
	c.alive.Store(1)
	if _, ok := c.Leadership(); ok {
		t.Error("a node alone, with seeds it cannot reach, leads")
	}
}

// Every region's leader is picked in one pass over the members; it must
// be the pick the rule makes region by region.
func TestShownLeadersMatchThePerRegionRule(t *testing.T) {
	now := time.Now()
	c := leaderCluster(now)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		id := fmt.Sprintf("n%03d", i)
		p := &peer{state: StateAlive, recv: now,
			rep: &report{ID: id, Gen: 1, Seq: 1, Term: uint64(rng.IntN(4)), Leads: rng.IntN(3) == 0}}
		switch rng.IntN(5) {
		case 0:
			p.state = StateDead
		case 1:
			p.recv = now.Add(-2 * fastTiming.StaleAfter) // stale
		}
		c.addPeer(id, p, fmt.Sprintf("r%d", rng.IntN(12)))
	}
	c.lead = 2
	shown := c.shownLeadersLocked(now)
	regions := 0
	for _, p := range c.peers {
		want := leaderTerm{}
		want.id, want.term = c.shownLeaderLocked(p.meta.Region, now)
		if got, ok := shown[p.meta.Region]; !ok || got != want {
			t.Fatalf("region %s: one pass picks %+v (listed %v), the rule %+v", p.meta.Region, got, ok, want)
		}
	}
	for range shown {
		regions++
	}
	if regions != 13 {
		t.Errorf("%d regions listed, want 13 (eu and r0..r11)", regions)
	}
}

// spans records, per term, the earliest a Leadership call that held it
// returned and the latest one began: the leader may have acted within.
type spans struct {
	mu    sync.Mutex
	first map[uint64]time.Time
	last  map[uint64]time.Time
}

func newSpans() *spans { return &spans{first: map[uint64]time.Time{}, last: map[uint64]time.Time{}} }

// record notes a call that began at before, returned at after, and said
// the caller leads under term.
func (s *spans) record(term uint64, before, after time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, seen := s.first[term]; !seen || after.Before(f) {
		s.first[term] = after
	}
	if before.After(s.last[term]) {
		s.last[term] = before
	}
}

// check fails when some claim of a term began after the first claim of a
// later term returned: two leaders acting at once.
func (s *spans) check(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	terms := slices.Sorted(maps.Keys(s.first))
	for i, early := range terms {
		for _, later := range terms[i+1:] {
			if gap := s.first[later].Sub(s.last[early]); gap <= 0 {
				t.Errorf("term %d was still claimed %v after term %d began", early, -gap, later)
			}
		}
	}
	for i := 1; i < len(terms); i++ {
		t.Logf("term %d ended %v before term %d began", terms[i-1], s.first[terms[i]].Sub(s.last[terms[i-1]]), terms[i])
	}
}

func watchSpans(nodes []*node, stop <-chan struct{}) *spans {
	s := newSpans()
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			for _, n := range nodes {
				before := time.Now()
				if term, ok := n.Leadership(); ok {
					s.record(term, before, time.Now())
				}
			}
		}
	}()
	return s
}

// The leader is cut off from its region (as a paused process or a broken
// link looks). It must stop acting before the next leader starts: every
// Leadership call that said "term T" ended before any call that said a
// later term began, even while the cut-off node had not yet noticed.
func TestCutOffLeaderStopsBeforeTheNextActs(t *testing.T) {
	nw := faultnet.New()
	nodes := startCluster(t, nw, "w", "eu", 5, nil)
	eventually(t, "converged", func() bool { return allSee(nodes, "w-04", 0) && allSee(nodes, "w-00", 0) })
	first, before := oneLeader(t, "one leader", nodes)
	stop := make(chan struct{})
	sp := watchSpans(nodes, stop)
	time.Sleep(time.Second)
	nw.Isolate(first)
	var others []*node
	for _, n := range nodes {
		if n.meta.ID != first {
			others = append(others, n)
		}
	}
	_, next := oneLeader(t, "another node leads", others)
	time.Sleep(3 * time.Second) // the cut-off node may still think it leads
	close(stop)
	nw.Heal()
	sp.mu.Lock()
	if sp.first[before].IsZero() || sp.first[next].IsZero() {
		t.Fatalf("terms seen: %v; want %d and %d", sp.first, before, next)
	}
	sp.mu.Unlock()
	sp.check(t)
}

// A term no node could have taken (honest terms follow the wall clock's
// seconds and rise by one per change of leader) must not enter the region:
// from one report of a member that holds the key, every node would carry
// it in its own reports and lease grants, the next term would wrap past
// the largest integer, and the region would have no leader again, even
// after that member was removed from the keyring.
func TestAbsurdTermIsRefused(t *testing.T) {
	now := time.Now()
	c := leaderCluster(now)
	c.setState("a", StateDead)
	c.peers["c"].addr = "127.0.0.1:1"
	c.grantLease(leaseMsg{From: "c", Term: math.MaxUint64 - 1, Round: 1}, now)
	for seq := uint64(2); seq <= 4; seq++ {
		c.tendLeadership(now)
		c.confirmLease(now)
		// c, and every member that took the term from it, keeps sending it.
		c.merge(&report{ID: "c", Gen: 1, Seq: seq, Term: math.MaxUint64}, now)
	}
	term, ok := c.Leadership()
	if !ok || term > uint64(now.Unix())+1000 {
		t.Fatalf("after reports and a lease ask of term 2^64-1: b leads = %v under term %d; want a term near the clock's %d", ok, term, now.Unix())
	}
	if c.DroppedMessages() == 0 {
		t.Error("the absurd reports were not counted as dropped")
	}
	// Nor may it win the summary held of another region.
	c.mergeSummary(&summary{Region: "us", Sender: "x", Gen: 1, Seq: 1, Term: math.MaxUint64}, false, now)
	if h := c.summaries["us"]; h != nil {
		t.Errorf("a summary under term 2^64-1 was kept")
	}
}
