package upstream

import (
	"hash/maphash"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"perigee/edge/exchange"
)

// balancer picks a backend from the service's pool: its healthy backends,
// or all of them in panic mode ("all" leaves out those waiting for their
// first health check, which are in no pool). rebuild runs under the
// service's lock whenever membership, health or weights change; pick runs
// on the request path, lock-free except for weighted least request.
type balancer interface {
	rebuild(all, pool []*Backend)
	pick(r *http.Request, pool []*Backend) *Backend
}

func newBalancer(c *Config) balancer {
	switch c.Balancer {
	case LeastRequest:
		bias := DefaultActiveRequestBias
		if c.ActiveRequestBias != nil {
			bias = *c.ActiveRequestBias
		}
		return &leastRequest{bias: bias}
	case EWMA:
		return p2c{cost: (*Backend).cost}
	case Hash:
		return &ringHash{key: c.Hash}
	default:
		return &smoothRR{}
	}
}

// smoothRR is smooth weighted round robin: weights 5,1,1 give a,a,b,a,c,a,a
// rather than five a's in a row. The sequence is precomputed at rebuild, so a
// pick is one atomic increment.
type smoothRR struct {
	seq  atomic.Pointer[[]*Backend]
	next atomic.Uint64
}

func (s *smoothRR) rebuild(_, pool []*Backend) {
	seq := smoothSequence(pool)
	s.seq.Store(&seq)
}

func (s *smoothRR) pick(*http.Request, []*Backend) *Backend {
	seq := s.seq.Load()
	if seq == nil || len(*seq) == 0 {
		return nil
	}
	return (*seq)[(s.next.Add(1)-1)%uint64(len(*seq))]
}

// maxSequence bounds the precomputed sequence, which a full cycle would
// make as long as the sum of the weights: 1,000 discovered backends of
// distinct weights sum to half a million, a second's work per rebuild.
// Each backend's count in a prefix of the smooth sequence is within one
// of its exact share, so the prefix, repeated, keeps the weights to 1 in
// maxSequence of the traffic.
const maxSequence = 8192

// smoothSequence runs the smooth weighted round robin for one full cycle,
// or for maxSequence picks (or one per backend, if more) when that is
// shorter.
func smoothSequence(bs []*Backend) []*Backend {
	if len(bs) == 0 {
		return nil
	}
	g, total := 0, 0
	for _, b := range bs {
		g = gcd(g, b.Weight())
	}
	weights := make([]int, len(bs))
	for i, b := range bs {
		weights[i] = b.Weight() / g
		total += weights[i]
	}
	n := min(total, max(maxSequence, len(bs)))
	current := make([]int, len(bs))
	seq := make([]*Backend, 0, n)
	for range n {
		best := 0
		for i := range bs {
			current[i] += weights[i]
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		seq = append(seq, bs[best])
	}
	return seq
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// p2c is the power of two choices: two random healthy backends, the cheaper
// wins. It avoids the herd that "always the least loaded" causes when many
// requests decide on the same stale view.
type p2c struct{ cost func(*Backend) float64 }

func (p2c) rebuild(_, _ []*Backend) {}

func (p p2c) pick(_ *http.Request, pool []*Backend) *Backend {
	switch n := len(pool); n {
	case 0:
		return nil
	case 1:
		return pool[0]
	default:
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := pool[i], pool[j]
		if p.cost(b) < p.cost(a) {
			return b
		}
		return a
	}
}

// leastRequest is Envoy's least request. With equal weights it is the power
// of two choices on requests in flight. With unequal weights it is
// earliest-deadline-first scheduling on an effective weight of
// weight/(active+1)^bias, taken at each pick: idle backends share by
// weight, and a loaded one loses share as its queue grows.
type leastRequest struct {
	bias float64

	equal atomic.Bool // every weight in the pool is the same: p2c
	mu    sync.Mutex  // guards the schedule; held for one pass over the pool
	now   float64     // the schedule's clock: the deadline last served
	due   map[*Backend]float64
}

func (l *leastRequest) rebuild(_, pool []*Backend) {
	l.mu.Lock()
	defer l.mu.Unlock()
	equal := true
	due := make(map[*Backend]float64, len(pool))
	for _, b := range pool {
		equal = equal && b.Weight() == pool[0].Weight()
		d, ok := l.due[b]
		if !ok {
			d = l.now + 1/l.effective(b) // a newcomer joins the schedule now
		}
		due[b] = d
	}
	l.due = due
	l.equal.Store(equal)
}

func (l *leastRequest) effective(b *Backend) float64 {
	w := float64(b.Weight())
	if l.bias == 0 {
		return w
	}
	return w / math.Pow(float64(b.inFlight.Load()+1), l.bias)
}

func (l *leastRequest) pick(r *http.Request, pool []*Backend) *Backend {
	if l.equal.Load() {
		return p2c{cost: func(b *Backend) float64 { return float64(b.inFlight.Load()) }}.pick(r, pool)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var best *Backend
	bestDue := math.Inf(1)
	for _, b := range pool { // in pool order, so ties go the same way each time
		if d, ok := l.due[b]; ok && d < bestDue {
			best, bestDue = b, d
		}
	}
	if best == nil {
		return nil
	}
	l.now = bestDue
	l.due[best] = bestDue + 1/l.effective(best)
	return best
}

// ringHash is consistent hashing over all backends (healthy or not), so a
// backend going down moves only its own keys; a lookup walks past points
// outside the pool to the next one in it.
type ringHash struct {
	key  HashKey
	ring atomic.Pointer[[]ringPoint]
	any  atomic.Bool // the pool is every backend (all healthy, or panic)
	// over is what the ring was built from, each backend with its weight:
	// a change of health alone leaves the ring as it is. Only rebuild,
	// under the service's lock, touches it.
	over []ringMember
}

type ringMember struct {
	b      *Backend
	weight int
}

type ringPoint struct {
	hash uint64
	b    *Backend
}

// pointsPerWeight sets the ring's resolution: 160 points per unit of weight
// keeps each backend's share within a few percent of its weight.
const pointsPerWeight = 160

var ringSeed = maphash.MakeSeed()

// maxRingPoints bounds the ring when policies set large weights: shares stay
// proportional, and a rebuild stays cheap.
const maxRingPoints = 100_000

func (h *ringHash) rebuild(all, pool []*Backend) {
	h.any.Store(len(pool) == len(all))
	over := make([]ringMember, len(all))
	for i, b := range all {
		over[i] = ringMember{b, b.Weight()}
	}
	if h.ring.Load() != nil && slices.Equal(over, h.over) {
		return // the same backends and weights: the same ring
	}
	h.over = over
	total := 0
	for _, b := range all {
		total += b.Weight()
	}
	perWeight := float64(pointsPerWeight)
	if total*pointsPerWeight > maxRingPoints {
		perWeight = float64(maxRingPoints) / float64(total)
	}
	var ring []ringPoint
	for _, b := range all {
		for i := range max(1, int(float64(b.Weight())*perWeight)) {
			ring = append(ring, ringPoint{maphash.String(ringSeed, b.Addr+"#"+strconv.Itoa(i)), b})
		}
	}
	sort.Slice(ring, func(i, j int) bool { return ring[i].hash < ring[j].hash })
	h.ring.Store(&ring)
}

func (h *ringHash) pick(r *http.Request, pool []*Backend) *Backend {
	ringp := h.ring.Load()
	x, ok := h.hashOf(r)
	if !ok || ringp == nil || len(pool) == 0 {
		return p2c{cost: func(b *Backend) float64 { return float64(b.inFlight.Load()) }}.pick(r, pool)
	}
	ring := *ringp
	i := sort.Search(len(ring), func(i int) bool { return ring[i].hash >= x })
	now, any := time.Now(), h.any.Load()
	for n := range len(ring) {
		if b := ring[(i+n)%len(ring)].b; any || b.Healthy(now) {
			return b
		}
	}
	return nil
}

// hashOf is the request's point on the ring, if it has a key.
func (h *ringHash) hashOf(r *http.Request) (uint64, bool) {
	switch {
	case h.key.Header != "":
		v := r.Header.Get(h.key.Header)
		return maphash.String(ringSeed, v), v != ""
	case h.key.Cookie != "":
		c, err := r.Cookie(h.key.Cookie)
		if err != nil || c.Value == "" {
			return 0, false
		}
		return maphash.String(ringSeed, c.Value), true
	default:
		// The client the node resolved through geo.trusted_proxies (the
		// peer itself when it is not trusted), so clients behind a trusted
		// balancer spread, and none chooses its backend by X-Forwarded-For.
		if x := exchange.From(r.Context()); x != nil && x.Client.Addr.IsValid() {
			return maphash.Comparable(ringSeed, x.Client.Addr), true
		}
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			return maphash.String(ringSeed, r.RemoteAddr), r.RemoteAddr != ""
		}
		return maphash.String(ringSeed, host), true
	}
}
