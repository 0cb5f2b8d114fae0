package upstream

import (
	"net/url"
	"slices"
	"time"

	"perigee/edge/discovery"
)

// A backend discovery stops finding is remembered for this long (and at
// most maxGone of them), so one that comes back after a flap in DNS keeps
// its state.
const (
	rememberGone = 5 * time.Minute
	maxGone      = 1000
)

// goneBackend is a discovered backend no longer found, since at.
type goneBackend struct {
	b  *Backend
	at time.Time
}

// SetDiscovered makes eps the service's discovered backends. One found
// before keeps its state (health, ejection, latency, in-flight) by URL,
// also after a short absence; its weight follows discovery only when
// discovery changes it, so a weight a policy set holds until then. One no
// longer found drains: it takes no new requests, and those in flight
// finish. With active checks, one new or back from an absence takes no
// traffic until its first check, made at once, passes.
func (s *Service) SetDiscovered(eps []discovery.Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	old := *s.all.Load()
	known := map[string]*Backend{}
	for _, g := range s.gone {
		known[g.b.URL.String()] = g.b
	}
	for _, b := range old {
		known[b.URL.String()] = b
	}
	var all []*Backend
	taken := map[string]bool{} // the addresses of static and actuator backends
	for _, b := range old {
		if b.Source != SourceDiscovery {
			all = append(all, b)
			taken[b.Addr] = true
		}
	}
	kept := map[*Backend]bool{}
	checking, fresh := s.cfg.Health.Path != "", false
	for _, e := range eps {
		u, err := url.Parse(e.URL)
		if err != nil || taken[u.Host] {
			// The resolver builds these URLs; and a static or actuator
			// backend at the address, under this URL or another, is there.
			continue
		}
		b := known[e.URL]
		if b == nil {
			b = newBackend(u, e.Weight, SourceDiscovery)
		}
		if checking && !slices.Contains(old, b) {
			// New, or back after an absence in which it went unchecked:
			// whatever answers there now is checked before it serves.
			b.unchecked.Store(true)
			fresh = true
		}
		b.mu.Lock()
		if b.found != e.Weight {
			b.found = e.Weight
			b.weight.Store(int32(e.Weight))
		}
		b.mu.Unlock()
		kept[b] = true
		all = append(all, b)
	}
	var gone []goneBackend
	for _, g := range s.gone {
		if !kept[g.b] && (now.Sub(g.at) < rememberGone || g.b.InFlight() > 0) {
			gone = append(gone, g)
		}
	}
	for _, b := range old {
		if b.Source == SourceDiscovery && !kept[b] {
			gone = append(gone, goneBackend{b, now})
		}
	}
	if len(gone) > maxGone { // the oldest are forgotten first
		gone = gone[len(gone)-maxGone:]
	}
	s.gone = gone
	s.all.Store(&all)
	s.changedAt.Store(now.UnixNano())
	s.log.Info("discovered backends changed", "backends", len(eps))
	s.refreshLocked()
	if fresh {
		select {
		case s.checkNow <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
}

// drainingLocked lists the backends gone from discovery that still serve
// requests.
func (s *Service) drainingLocked() []*Backend {
	var out []*Backend
	for _, g := range s.gone {
		if g.b.InFlight() > 0 {
			out = append(out, g.b)
		}
	}
	return out
}
