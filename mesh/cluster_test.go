package mesh

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/mesh/faultnet"
	"perigee/telemetry"
)

// fastTuning shrinks memberlist's timers so failures are detected in a
// few seconds, yet leaves room for a 2-core box running every package's
// tests under -race: a node starved of CPU for a moment must not be
// declared dead, and gossip must not eat the CPU it needs.
func fastTuning(mc *memberlist.Config) {
	mc.ProbeInterval = 500 * time.Millisecond
	mc.ProbeTimeout = 400 * time.Millisecond
	mc.GossipInterval = 100 * time.Millisecond
	mc.PushPullInterval = 2 * time.Second
	mc.SuspicionMult = 3
	mc.GossipToTheDeadTime = 2 * time.Second
	mc.DeadNodeReclaimTime = time.Second
	mc.TCPTimeout = 2 * time.Second
}

// fastTiming's lease is shorter than fastTuning's shortest suspicion
// timeout (3 x 500 ms), as the profiles' are.
var fastTiming = Timing{Sample: 100 * time.Millisecond, Refresh: 500 * time.Millisecond, StaleAfter: 10 * time.Second, Rejoin: 300 * time.Millisecond,
	SummaryGap: 500 * time.Millisecond, SummaryRefresh: 500 * time.Millisecond, SummaryStale: 5 * time.Second, Lease: time.Second}

func testLogger() *slog.Logger {
	if os.Getenv("MESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// node is one cluster member under test, with a load figure the test moves.
type node struct {
	*Cluster
	meta NodeMeta
	rps  atomic.Int64
	addr string
	tr   *faultnet.Transport
}

func (n *node) sample() telemetry.NodeSample {
	return telemetry.NodeSample{RPS: float64(n.rps.Load()), Services: map[string]telemetry.ServiceSample{
		"api": {RPS: float64(n.rps.Load()), Backends: 2, HealthyBackends: 2},
	}}
}

// startNode starts a member on the fault network at addr ("127.0.0.1:0"
// for any port), joining the given seeds.
func startNode(t *testing.T, nw *faultnet.Network, id, region, addr string, join []string, keyring string) *node {
	t.Helper()
	return startNodeWith(t, nw, id, region, addr, Config{Join: join, KeyringFile: keyring})
}

// startNodeWith is startNode with more of the config set by the test.
func startNodeWith(t *testing.T, nw *faultnet.Network, id, region, addr string, cfg Config) *node {
	t.Helper()
	tr, err := nw.Transport(id, region, addr)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{meta: NodeMeta{ID: id, Region: region, Capacity: 1, PublicURL: "https://" + id + ".example.net"}, addr: tr.Addr(), tr: tr}
	cfg.Transport = tr
	if cfg.Tuning == nil {
		cfg.Tuning = fastTuning
	}
	if cfg.Timing == (Timing{}) {
		cfg.Timing = fastTiming
	}
	c, err := Start(context.Background(), cfg, n.meta, n.sample, testLogger().With("test", t.Name()))
	if err != nil {
		tr.Shutdown()
		t.Fatal(err)
	}
	n.Cluster = c
	t.Cleanup(func() { c.Shutdown() })
	return n
}

// startCluster starts count nodes named prefix-00.. in region, all
// joining the first.
func startCluster(t *testing.T, nw *faultnet.Network, prefix, region string, count int, seed []string) []*node {
	t.Helper()
	var nodes []*node
	for i := range count {
		n := startNode(t, nw, fmt.Sprintf("%s-%02d", prefix, i), region, "127.0.0.1:0", seed, "")
		if seed == nil {
			seed = []string{n.addr}
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func member(c *Cluster, id string) (Member, bool) {
	for _, m := range c.Members() {
		if m.Meta.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// eventuallyEach polls until cond has held for every node, each at some
// moment: on a starved box, a dozen nodes may never all agree at the same
// instant while one of them is briefly suspected.
func eventuallyEach(t *testing.T, what string, nodes []*node, cond func(*node) bool) {
	t.Helper()
	pending := slices.Clone(nodes)
	eventually(t, what, func() bool {
		pending = slices.DeleteFunc(pending, cond)
		return len(pending) == 0
	})
}

// allSee says whether every observer holds a fresh report of id with rps.
func allSee(observers []*node, id string, rps float64) bool {
	for _, o := range observers {
		m, ok := member(o.Cluster, id)
		if !ok || m.State != StateAlive || m.Stale || m.Report.RPS != rps {
			return false
		}
	}
	return true
}

func allState(observers []*node, id string, want State) bool {
	for _, o := range observers {
		m, ok := member(o.Cluster, id)
		if want == StateDead && !ok {
			continue // already forgotten counts as gone
		}
		if !ok || m.State != want {
			return false
		}
	}
	return true
}

func leaders(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		if n.IsLeader() {
			out = append(out, n.meta.ID)
		}
	}
	return out
}
