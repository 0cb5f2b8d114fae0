// Package admission decides whether a route takes a request at all: the
// token-bucket rate limits and load shedding that scaling policies set. An
// open gate costs two atomic loads.
package admission

import (
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Gate guards one route.
type Gate struct {
	limited atomic.Bool
	shed    atomic.Uint64 // float64 bits: the share of requests to refuse

	mu     sync.Mutex // guards the bucket
	rate   float64    // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

// SetLimit caps the route at rps with bursts of burst; rps 0 lifts the cap.
func (g *Gate) SetLimit(rps float64, burst int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rate, g.burst = rps, math.Max(1, float64(burst))
	g.tokens, g.last = g.burst, time.Time{}
	g.limited.Store(rps > 0)
}

// SetShed refuses the given share (0..1) of the route's requests; 0 stops
// shedding. Priority is a matter of routes: traffic that must not be shed
// gets a route of its own. (A header would let any client claim it.)
func (g *Gate) SetShed(fraction float64) {
	g.shed.Store(math.Float64bits(math.Max(0, math.Min(1, fraction))))
}

// Limit and Shed read the gate's settings.
func (g *Gate) Limit() (rps float64, burst int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.limited.Load() {
		return 0, 0
	}
	return g.rate, int(g.burst)
}

// Shed is the share of requests being refused.
func (g *Gate) Shed() float64 { return math.Float64frombits(g.shed.Load()) }

// Verdict is why a request was refused, with the status and the
// Retry-After to send.
type Verdict struct {
	Status     int
	Reason     string
	RetryAfter time.Duration
}

// Admit reports whether a request may go on, and if not, what to answer.
func (g *Gate) Admit(now time.Time) (Verdict, bool) {
	if share := g.Shed(); share > 0 && rand.Float64() < share {
		return Verdict{http.StatusServiceUnavailable, "shedding load", time.Second}, false
	}
	if !g.limited.Load() {
		return Verdict{}, true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.last.IsZero() {
		g.tokens = math.Min(g.burst, g.tokens+now.Sub(g.last).Seconds()*g.rate)
	}
	g.last = now
	if g.tokens >= 1 {
		g.tokens--
		return Verdict{}, true
	}
	wait := time.Duration((1 - g.tokens) / g.rate * float64(time.Second))
	return Verdict{http.StatusTooManyRequests, "rate limit exceeded", wait}, false
}

// Gates holds a gate per route name. Gates outlive config reloads, so a
// limit a policy set survives a reload of the routes.
type Gates struct{ m sync.Map }

// Get returns the route's gate, creating it on first use.
func (gs *Gates) Get(route string) *Gate {
	if g, ok := gs.m.Load(route); ok {
		return g.(*Gate)
	}
	g, _ := gs.m.LoadOrStore(route, new(Gate))
	return g.(*Gate)
}
