package mesh

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/mesh/faultnet"
)

// Real UDP and TCP sockets, memberlist's own transport: three nodes join
// through a seed, see each other's metadata and load, and estimate RTTs.
func TestRealSocketsJoinConvergeAndEstimateRTT(t *testing.T) {
	var nodes []*node
	var seed []string
	for i, id := range []string{"a", "b", "c"} {
		n := &node{meta: NodeMeta{ID: id, Region: "eu", Zone: "z1", Lat: 48.8, Lon: 2.3, Capacity: 4, Version: "test"}}
		n.rps.Store(int64(10 * (i + 1)))
		cfg := Config{Bind: "127.0.0.1:0", Join: seed, Tuning: fastTuning, Timing: fastTiming}
		c, err := Start(context.Background(), cfg, n.meta, n.sample, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Shutdown() })
		n.Cluster = c
		if seed == nil {
			seed = []string{c.Addr()}
		}
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		eventually(t, "everyone sees "+n.meta.ID, func() bool { return allSee(nodes, n.meta.ID, float64(n.rps.Load())) })
	}
	m, _ := member(nodes[0].Cluster, "c")
	if m.Meta != nodes[2].meta {
		t.Errorf("metadata of c seen by a = %+v, want %+v", m.Meta, nodes[2].meta)
	}
	eventually(t, "a leads", func() bool { return nodes[1].Region("eu").Leader == "a" })
	v := nodes[1].Region("eu")
	if v.Fresh != 3 || v.RPS != 60 || v.Capacity != 12 || v.Services["api"].HealthyBackends != 6 || v.Leader != "a" {
		t.Errorf("region view = %+v, want 3 fresh nodes, 60 rps, capacity 12, 6 healthy api backends, leader a", v)
	}
	nodes[1].rps.Store(500)
	eventually(t, "the load change of b reaches all", func() bool { return allSee(nodes, "b", 500) })
	eventually(t, "a has an RTT estimate to c", func() bool {
		d, ok := nodes[0].RTT("c")
		return ok && d > 0 && d < time.Second
	})
	if _, ok := nodes[0].RTT("nobody"); ok {
		t.Error("RTT to an unknown node should not be known")
	}
}

// A node that starts before its seed keeps retrying until the seed is up.
func TestJoinRetriesUntilSeedStarts(t *testing.T) {
	nw := faultnet.New()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seedAddr := l.Addr().String()
	l.Close()
	late := startNode(t, nw, "late", "eu", "127.0.0.1:0", []string{seedAddr}, "")
	time.Sleep(3 * fastTiming.Rejoin) // a few failed attempts
	if len(late.Members()) != 1 {
		t.Fatalf("alone node lists %d members", len(late.Members()))
	}
	seed := startNode(t, nw, "seed", "eu", seedAddr, nil, "")
	nodes := []*node{late, seed}
	eventually(t, "the late node joined its seed", func() bool { return allState(nodes, "late", StateAlive) && allState(nodes, "seed", StateAlive) })
}

// A load change spreads to every node of its region in its reports, and
// to the other region in its region's summary, despite inter-region delay
// and packet loss; each region's view merges only its own nodes.
func TestLoadChangeConvergesUnderDelayAndLoss(t *testing.T) {
	nw := faultnet.New()
	nw.SetDelay("eu", "us", 40*time.Millisecond)
	nw.SetLoss(0.05)
	eu := startCluster(t, nw, "eu", "eu", 6, nil)
	us := startCluster(t, nw, "us", "us", 6, []string{eu[0].addr})
	all := append(slices.Clone(eu), us...)
	eventually(t, "12 members everywhere", func() bool {
		for _, n := range all {
			if len(n.Members()) != 12 {
				return false
			}
		}
		return true
	})
	us[3].rps.Store(777)
	eventuallyEach(t, "us-03's change seen by its region", us, func(o *node) bool { return allSee([]*node{o}, "us-03", 777) })
	eventuallyEach(t, "us's summary of 6 nodes, 777 rps, seen by eu", eu, func(o *node) bool {
		v := o.Region("us")
		m, _ := member(o.Cluster, "us-03")
		return len(v.Members) == 6 && v.Fresh == 6 && v.RPS == 777 && v.Summary && m.State == StateAlive && !m.Stale
	})
	if st := nw.Stats(); st.DroppedPackets == 0 {
		t.Error("the 5% loss dropped nothing")
	}
}

// Killing the leader (no leave message) makes the others declare it dead
// and the next id take over under a higher term.
func TestFailureDetectionAndLeaderFailover(t *testing.T) {
	nw := faultnet.New()
	nodes := startCluster(t, nw, "n", "eu", 4, nil)
	eventually(t, "one leader, n-00", func() bool {
		l := leaders(nodes)
		return len(l) == 1 && l[0] == "n-00" && allSee(nodes, "n-03", 0)
	})
	rest := nodes[1:]
	eventually(t, "the survivors know the leader's term", func() bool {
		for _, n := range rest {
			if n.Region("eu").Term == 0 {
				return false
			}
		}
		return true
	})
	before := nodes[1].Region("eu").Term
	nodes[0].Shutdown()
	eventually(t, "n-00 declared dead", func() bool { return allState(rest, "n-00", StateDead) })
	eventually(t, "n-01 leads", func() bool {
		l := leaders(rest)
		return len(l) == 1 && l[0] == "n-01"
	})
	eventually(t, "the term moved past the old leader's", func() bool {
		for _, n := range rest {
			if n.Region("eu").Term <= before {
				return false
			}
		}
		return true
	})
	var sawDead, sawLeader bool // events come from the sample loop: poll
	eventually(t, "events: n-00 dead, n-01 leader", func() bool {
		for len(nodes[2].Events()) > 0 {
			e := <-nodes[2].Events()
			sawDead = sawDead || (e.Kind == EventDead && e.Fields["member"] == "n-00")
			sawLeader = sawLeader || (e.Kind == EventLeader && e.Fields["leader"] == "n-01" && e.Fields["term"] != "")
		}
		return sawDead && sawLeader
	})
}

// A one-way block (p-00 cannot send to p-01) still gets p-01 suspected by
// p-00 at worst, never split-brains the report: the others relay it.
func TestOneWayBlockReportsStillFlow(t *testing.T) {
	nw := faultnet.New()
	nodes := startCluster(t, nw, "o", "eu", 4, nil)
	eventually(t, "converged", func() bool { return allSee(nodes, "o-03", 0) })
	nw.Block([]string{"o-00"}, []string{"o-01"})
	nodes[0].rps.Store(42)
	eventually(t, "o-01 hears o-00's change through the others", func() bool { return allSee(nodes[1:2], "o-00", 42) })
}

// A node that crashes and restarts under the same id is seen with its new
// figures, although its report sequence started over.
func TestRejoinUnderSameID(t *testing.T) {
	nw := faultnet.New()
	nodes := startCluster(t, nw, "r", "eu", 3, nil)
	nodes[2].rps.Store(5)
	eventually(t, "converged", func() bool { return allSee(nodes, "r-02", 5) })
	addr := nodes[2].addr
	nodes[2].Shutdown()
	eventually(t, "r-02 dead", func() bool { return allState(nodes[:2], "r-02", StateDead) })
	back := startNode(t, nw, "r-02", "eu", addr, []string{nodes[0].addr}, "")
	back.rps.Store(9)
	eventually(t, "r-02 alive again with its new figures", func() bool { return allSee(nodes[:2], "r-02", 9) })
}

// A node restarted with its clock stepped back an hour is seen again with
// its new figures, in member lists and in its region's view: its reports
// are not ordered by a clock that can run backwards.
func TestRestartWithClockSteppedBackIsSeen(t *testing.T) {
	nw := faultnet.New()
	nodes := startCluster(t, nw, "c", "eu", 3, nil)
	nodes[2].rps.Store(5)
	eventually(t, "converged", func() bool { return allSee(nodes, "c-02", 5) })
	addr := nodes[2].addr
	nodes[2].Shutdown()
	eventually(t, "c-02 dead", func() bool { return allState(nodes[:2], "c-02", StateDead) })
	stepped := func() time.Time { return time.Now().Add(-time.Hour) }
	back := startNodeWith(t, nw, "c-02", "eu", addr, Config{Join: []string{nodes[0].addr}, Clock: stepped})
	back.rps.Store(9)
	eventually(t, "c-02 alive again with its new figures", func() bool { return allSee(nodes[:2], "c-02", 9) })
	eventually(t, "c-02 back in its region's view", func() bool {
		v := nodes[0].Region("eu")
		return v.Fresh == 3 && v.RPS == 9
	})
	// Reports of its former self, still relayed by someone, must not win.
	old := &report{ID: "c-02", Gen: uint64(time.Now().UnixNano()), Seq: 1000, Sample: nodes[2].sample()}
	nodes[0].merge(old, time.Now())
	if m, _ := member(nodes[0].Cluster, "c-02"); m.Report.RPS != 9 {
		t.Errorf("a report of the former instance replaced the live one: rps %v", m.Report.RPS)
	}
}

// A node that missed a report asks that node for it alone: the repair
// costs a report's bytes, not a push/pull of every report and member.
func TestMissedReportRepairedWithoutPushPull(t *testing.T) {
	nw := faultnet.New()
	noPushPull := func(mc *memberlist.Config) {
		fastTuning(mc)
		mc.PushPullInterval = 0 // only the repair may open a stream
	}
	var nodes []*node
	for i := range 10 {
		cfg := Config{Tuning: noPushPull}
		if i > 0 {
			cfg.Join = []string{nodes[0].addr}
		}
		nodes = append(nodes, startNodeWith(t, nw, fmt.Sprintf("m-%02d", i), "eu", "127.0.0.1:0", cfg))
	}
	nodes[0].rps.Store(40)
	eventually(t, "converged", func() bool {
		for _, n := range nodes {
			if !allSee(nodes, n.meta.ID, float64(n.rps.Load())) {
				return false
			}
		}
		return true
	})
	eventually(t, "no report still on its way", func() bool {
		for _, n := range nodes {
			if len(n.outbox) > 0 || len(n.streams) > 0 {
				return false
			}
		}
		return true
	})
	obs := nodes[1]
	state := (&delegate{obs.Cluster}).LocalState(false) // what one side of a push/pull sends
	// obs "missed" m-00's latest report: it holds an older one.
	obs.mu.Lock()
	p := obs.peers["m-00"]
	old := *p.rep
	old.Seq, old.Sample.RPS = 0, 1
	p.rep = &old
	obs.mu.Unlock()
	// Only obs's streams: under load other nodes repair reports of their
	// own, which are not this repair's cost.
	before := obs.tr.StreamBytes()
	eventually(t, "obs repaired m-00's report", func() bool { return allSee([]*node{obs}, "m-00", 40) })
	t.Logf("spent %d, state %d", obs.tr.StreamBytes()-before, len(state))
	if spent := obs.tr.StreamBytes() - before; spent >= int64(len(state)) {
		t.Errorf("the repair moved %d stream bytes; one side of a push/pull is %d", spent, len(state))
	}
}

func writeKeyring(t *testing.T, keys ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mesh.keys")
	if err := os.WriteFile(p, []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Nodes holding the key form a cluster; one with a different key, or none,
// is refused and learns nothing.
func TestWrongKeyRefused(t *testing.T) {
	good := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	bad := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210"))
	kr := writeKeyring(t, good)
	nw := faultnet.New()
	a := startNode(t, nw, "k-a", "eu", "127.0.0.1:0", nil, kr)
	b := startNode(t, nw, "k-b", "eu", "127.0.0.1:0", []string{a.addr}, kr)
	eventually(t, "keyed nodes joined", func() bool { return allState([]*node{a, b}, "k-b", StateAlive) })

	wrong := startNode(t, nw, "k-wrong", "eu", "127.0.0.1:0", []string{a.addr}, writeKeyring(t, bad))
	none := startNode(t, nw, "k-none", "eu", "127.0.0.1:0", []string{a.addr}, "")
	time.Sleep(10 * fastTiming.Rejoin) // many join attempts
	for _, intruder := range []*node{wrong, none} {
		if len(intruder.Members()) != 1 {
			t.Errorf("%s learnt of %d members", intruder.meta.ID, len(intruder.Members()))
		}
		for _, n := range []*node{a, b} {
			if _, ok := member(n.Cluster, intruder.meta.ID); ok {
				t.Errorf("%s admitted %s", n.meta.ID, intruder.meta.ID)
			}
		}
	}
	if len(a.Members()) != 2 {
		t.Errorf("a lists %d members, want 2", len(a.Members()))
	}
}

// Garbage sent as a user message by a peer holding no report format is
// dropped and counted; a kind or format version this release does not
// know (a newer node's, during an upgrade) is skipped and counted apart;
// and the cluster keeps working.
func TestCorruptGossipDroppedAndCounted(t *testing.T) {
	nw := faultnet.New()
	nodes := startCluster(t, nw, "g", "eu", 2, nil)
	eventually(t, "converged", func() bool { return allSee(nodes, "g-01", 0) })
	target := nodes[0].ml.LocalNode()
	valid, err := encodeMessage(kindReport, []*report{{ID: "g-x", Gen: 1, Seq: 1}})
	if err != nil {
		t.Fatal(err)
	}
	malformed := [][]byte{{0xff}, valid[:len(valid)-1], {kindSummary, formatVersion, 0xff}, append([]byte{kindBundle, formatVersion, 1, 2}, valid[:2]...)}
	unknown := [][]byte{append([]byte{kindReport, formatVersion + 1}, valid[2:]...), {200, formatVersion, 1, 2, 3}}
	for _, msg := range append(malformed, unknown...) {
		if err := nodes[1].ml.SendReliable(target, msg); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "malformed and unknown messages counted apart", func() bool {
		return nodes[0].DroppedMessages() >= uint64(len(malformed)) && nodes[0].UnknownMessages() >= uint64(len(unknown))
	})
	if d := nodes[0].DroppedMessages(); d != uint64(len(malformed)) {
		t.Errorf("%d messages dropped as malformed, want %d", d, len(malformed))
	}
	nodes[1].rps.Store(11)
	eventually(t, "gossip still flows", func() bool { return allSee(nodes[:1], "g-01", 11) })
}

// A graceful leave shows as left, not dead, and is not reconnected to.
func TestLeaveShowsLeft(t *testing.T) {
	nw := faultnet.New()
	nodes := startCluster(t, nw, "l", "eu", 3, nil)
	// Every node sees every other: a node tells only the peers it knows
	// that it leaves, and one it has not met yet would record it dead.
	eventually(t, "converged", func() bool {
		return allSee(nodes, "l-00", 0) && allSee(nodes, "l-01", 0) && allSee(nodes, "l-02", 0)
	})
	if err := nodes[2].Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	nodes[2].Shutdown()
	eventually(t, "l-02 left", func() bool { return allState(nodes[:2], "l-02", StateLeft) })
}

// Leave waits at most its timeout, however many of its region's peers it
// cannot reach: it sent its leaving report over TCP to up to 16 of them
// one after the other, each dial bounded by memberlist's TCPTimeout alone
// (10 s on lan, 30 s on wan), so a node shutting down while its region
// was unreachable took minutes to leave, past the node's drain deadline.
func TestLeaveIsBoundedByItsTimeout(t *testing.T) {
	nw := faultnet.New()
	nodes := startCluster(t, nw, "w", "eu", 7, nil)
	eventually(t, "w-00 sees its region", func() bool { return nodes[0].Region("eu").Fresh == 7 })
	for _, n := range nodes[1:] {
		// A round trip past TCPTimeout: every dial from w-00 hangs until it.
		nw.SetDelay("w-00", n.meta.ID, time.Minute)
	}
	const timeout = time.Second
	start := time.Now()
	nodes[0].Leave(timeout) // an error says the leave's broadcast was not seen out
	// Six dials of fastTuning's 2 s TCPTimeout took 12 s one after the
	// other; one TCPTimeout is the slack for a loaded box.
	if took := time.Since(start); took > timeout+2*time.Second {
		t.Errorf("Leave(%v) took %v with six peers unreachable", timeout, took)
	}
}

// Extras ride with the report.
func TestExtraGossiped(t *testing.T) {
	nw := faultnet.New()
	nodes := startCluster(t, nw, "x", "eu", 2, nil)
	if err := nodes[1].SetExtra("geo", []byte("rtt-summary")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "extra seen", func() bool {
		m, ok := member(nodes[0].Cluster, "x-01")
		return ok && string(m.Extra["geo"]) == "rtt-summary"
	})
}

// A key is rotated in three reloads, as docs/mesh.md says, without a
// restart and without the cluster ever splitting: install the new key,
// use it, remove the old. Then a node holding only the new key joins and
// one holding only the old key is refused.
func TestKeyRotationByReload(t *testing.T) {
	oldKey := base64.StdEncoding.EncodeToString([]byte("old-key-0123456789abcdef"))
	newKey := base64.StdEncoding.EncodeToString([]byte("new-key-0123456789abcdef0123456789"[:32]))
	nw := faultnet.New()
	var nodes []*node
	var files []string
	for i := range 3 {
		f := writeKeyring(t, oldKey)
		var seed []string
		if i > 0 {
			seed = []string{nodes[0].addr}
		}
		nodes = append(nodes, startNode(t, nw, fmt.Sprintf("kr-%d", i), "eu", "127.0.0.1:0", seed, f))
		files = append(files, f)
	}
	eventually(t, "converged on the old key", func() bool { return allSee(nodes, "kr-2", 0) })
	for step, lines := range [][]string{{oldKey, newKey}, {newKey, oldKey}, {newKey}} {
		for i, n := range nodes {
			if err := os.WriteFile(files[i], []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := n.ReloadKeyring(); err != nil {
				t.Fatalf("step %d, %s: %v", step+1, n.meta.ID, err)
			}
		}
		rps := int64(10 * (step + 1))
		nodes[2].rps.Store(rps)
		eventually(t, fmt.Sprintf("after step %d gossip still flows", step+1), func() bool { return allSee(nodes, "kr-2", float64(rps)) })
	}
	late := startNode(t, nw, "kr-new", "eu", "127.0.0.1:0", []string{nodes[0].addr}, writeKeyring(t, newKey))
	eventually(t, "a node with the new key joins", func() bool { return allState(append(nodes, late), "kr-new", StateAlive) })
	stale := startNode(t, nw, "kr-old", "eu", "127.0.0.1:0", []string{nodes[0].addr}, writeKeyring(t, oldKey))
	time.Sleep(10 * fastTiming.Rejoin)
	if _, ok := member(nodes[0].Cluster, "kr-old"); ok || len(stale.Members()) != 1 {
		t.Error("a node holding only the removed key was admitted")
	}
	if err := os.WriteFile(files[0], []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].ReloadKeyring(); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Errorf("reload of a bad keyring = %v, want file:line", err)
	}
	eventually(t, "a failed reload keeps the keys", func() bool { nodes[2].rps.Store(99); return allSee(nodes[:1], "kr-2", 99) })
}

// Wants and their answers go over TCP, one after the other. A member whose
// dials go unanswered (its firewall drops them, or it is gone and not yet
// declared dead) held each send to it for memberlist's TCPTimeout (10 s on
// lan, 30 s on wan), and every send to any other member waited behind it,
// or was dropped once 16 were waiting.
func TestUnansweredPeerHoldsUpNoOtherStream(t *testing.T) {
	nw := faultnet.New()
	slow := func(mc *memberlist.Config) { fastTuning(mc); mc.TCPTimeout = time.Hour }
	a := startNodeWith(t, nw, "a-00", "eu", "127.0.0.1:0", Config{Tuning: slow})
	b := startNode(t, nw, "b-00", "eu", "127.0.0.1:0", []string{a.addr}, "")
	mute := startNode(t, nw, "m-00", "eu", "127.0.0.1:0", []string{a.addr}, "")
	eventually(t, "a-00 sees both", func() bool { return allSee([]*node{a}, "b-00", 0) && allSee([]*node{a}, "m-00", 0) })
	nw.SetLink("a-00", "m-00", faultnet.Link{Unanswered: true})
	t.Cleanup(nw.Heal)                    // before the nodes shut down
	unknown := []byte{200, formatVersion} // a kind no release knows: b counts it
	to := func(n *node) *memberlist.Node { m, _ := nodeAt(n.meta.ID, n.addr); return m }
	for range 3 {
		a.send(direct{to: to(mute), msg: unknown, reliable: true})
	}
	before := b.UnknownMessages()
	a.send(direct{to: to(b), msg: unknown, reliable: true})
	eventually(t, "b-00 gets a-00's stream while a-00's dials to m-00 hang", func() bool { return b.UnknownMessages() > before })
}
