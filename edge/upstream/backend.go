// Package upstream holds a service's backends and chooses among them: the
// balancers, active health checks, passive outlier ejection and the retry
// budget. Its request path reads atomics and immutable snapshots only.
package upstream

import (
	"math"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Backend is one upstream server with its live state. The same Backend is
// kept across config reloads while its URL stays, so health, latency and
// ejection history survive a reload.
type Backend struct {
	URL    *url.URL
	Addr   string // host:port
	Source string // where it came from: SourceStatic, SourceDiscovery, SourceActuator

	weight   atomic.Int32 // config weight, or what a policy set
	inFlight atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64

	checkUp      atomic.Bool  // last verdict of active checks (true until proven down)
	ejectedUntil atomic.Int64 // unix nanos; passive or policy ejection
	consecFails  atomic.Int32
	// unchecked: found by discovery while active checks run, and not yet
	// checked; it takes no traffic, nor counts toward the panic threshold,
	// until its first check (made at once) passes.
	unchecked atomic.Bool

	mu          sync.Mutex // guards the fields below, touched once per response
	ewma        float64    // peak-EWMA latency, nanoseconds
	ewmaAt      time.Time
	found       int // the weight discovery last gave it
	ejections   int // consecutive ejections, for the growing ejection time
	lastEjected time.Time
	passes      int // active check streaks
	fails       int
}

// Where a backend came from.
const (
	SourceStatic    = "static"
	SourceDiscovery = "discovery"
	SourceActuator  = "actuator"
)

func newBackend(u *url.URL, weight int, source string) *Backend {
	b := &Backend{URL: u, Addr: u.Host, Source: source}
	b.weight.Store(int32(weight))
	b.checkUp.Store(true)
	return b
}

// Weight is the backend's current weight.
func (b *Backend) Weight() int { return int(b.weight.Load()) }

// InFlight is the number of requests being served by the backend now.
func (b *Backend) InFlight() int64 { return b.inFlight.Load() }

// Healthy reports whether the backend may take traffic at now.
func (b *Backend) Healthy(now time.Time) bool {
	return b.checkUp.Load() && !b.unchecked.Load() && now.UnixNano() >= b.ejectedUntil.Load()
}

// ewmaDecay is peak-EWMA's time constant: a latency spike is taken at once
// and forgotten over about this long.
const ewmaDecay = 10 * time.Second

// observe folds one response time into the peak-EWMA.
func (b *Backend) observe(d time.Duration, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := float64(d)
	if v > b.ewma || b.ewmaAt.IsZero() {
		b.ewma = v // a peak counts at once
	} else {
		w := math.Exp(-float64(now.Sub(b.ewmaAt)) / float64(ewmaDecay))
		b.ewma = b.ewma*w + v*(1-w)
	}
	b.ewmaAt = now
}

// Latency is the backend's peak-EWMA response time.
func (b *Backend) Latency() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return time.Duration(b.ewma)
}

// cost is what the ewma balancer minimises: expected latency times the queue
// it would join, per unit of weight. Unmeasured backends cost least, so a new
// backend gets probed at once.
func (b *Backend) cost() float64 {
	return float64(b.Latency()) * float64(b.inFlight.Load()+1) / float64(b.weight.Load())
}

// Status is a backend's state as the admin API and the policies see it.
type Status struct {
	URL          string        `json:"url"`
	Source       string        `json:"source"`
	Draining     bool          `json:"draining,omitempty"` // gone from discovery; its requests in flight finish
	Healthy      bool          `json:"healthy"`
	CheckUp      bool          `json:"check_up"`
	Unchecked    bool          `json:"unchecked,omitempty"` // found by discovery, its first check not yet made
	EjectedUntil time.Time     `json:"ejected_until,omitzero"`
	Weight       int           `json:"weight"`
	InFlight     int64         `json:"in_flight"`
	Latency      time.Duration `json:"-"`
	LatencySec   float64       `json:"ewma_latency_seconds"`
	Requests     uint64        `json:"requests"`
	Failures     uint64        `json:"failures"`
}

// Status reads the backend's state.
func (b *Backend) Status(now time.Time) Status {
	s := Status{
		URL: b.URL.String(), Source: b.Source, Healthy: b.Healthy(now), CheckUp: b.checkUp.Load(), Unchecked: b.unchecked.Load(),
		Weight: b.Weight(), InFlight: b.inFlight.Load(), Latency: b.Latency(), LatencySec: b.Latency().Seconds(),
		Requests: b.requests.Load(), Failures: b.failures.Load(),
	}
	if until := b.ejectedUntil.Load(); until > now.UnixNano() {
		s.EjectedUntil = time.Unix(0, until)
	}
	return s
}

// end counts a request done, when its response body is finished; Acquire
// counted it in.
func (b *Backend) end() { b.inFlight.Add(-1) }

// MeanLatency is the service's latency as its backends see it: their
// peak-EWMAs weighted by the requests each has served.
func MeanLatency(bs []*Backend) time.Duration {
	var sum, n float64
	for _, b := range bs {
		w := float64(b.requests.Load())
		sum += w * float64(b.Latency())
		n += w
	}
	if n == 0 {
		return 0
	}
	return time.Duration(sum / n)
}
