package aggregator

import (
	"sync"
	"time"
)

// nodeBudgets keeps one node from taking the store from the others: each
// named node may store its share of max_store_bytes (the bound over the
// named nodes) per retention, a quarter of it at once and the rest at the
// rate that spreads it over the retention. That is a token bucket of a
// quarter share refilled at three quarters of a share per retention: over
// any span of the retention a node stores at most its share, and one
// batch more, since a batch is taken whenever the bucket holds anything
// and may leave it in debt (so a batch larger than the bucket still gets
// in). The development token "*" sends as any node and has no bucket.
type nodeBudgets struct {
	burst float64 // bytes a full bucket holds
	rate  float64 // bytes a second it refills

	mu     sync.Mutex
	bucket map[string]*budget // by token owner; fixed at start
}

type budget struct {
	level float64 // bytes it may still store; negative while in debt
	at    time.Time
}

func newNodeBudgets(maxStore int64, retention time.Duration, nodes []string, now time.Time) *nodeBudgets {
	b := &nodeBudgets{bucket: map[string]*budget{}}
	if len(nodes) == 0 {
		return b
	}
	share := float64(maxStore) / float64(len(nodes))
	b.burst = share / 4
	b.rate = (share - b.burst) / retention.Seconds()
	for _, n := range nodes {
		b.bucket[n] = &budget{level: b.burst, at: now}
	}
	return b
}

// allows reports whether node may store a batch now, and if not, how
// long until its bucket holds something again.
func (b *nodeBudgets) allows(node string, now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	nb := b.refill(node, now)
	if nb == nil || nb.level > 0 {
		return true, 0
	}
	return false, time.Duration(-nb.level/b.rate*float64(time.Second)) + 1
}

// charge takes n stored bytes from node's budget.
func (b *nodeBudgets) charge(node string, n int, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if nb := b.refill(node, now); nb != nil {
		nb.level -= float64(n)
	}
}

// refill brings node's bucket up to now and returns it, nil for a node
// without one. Called with mu held.
func (b *nodeBudgets) refill(node string, now time.Time) *budget {
	nb := b.bucket[node]
	if nb == nil {
		return nil
	}
	if d := now.Sub(nb.at); d > 0 {
		nb.level = min(b.burst, nb.level+d.Seconds()*b.rate)
		nb.at = now
	}
	return nb
}
