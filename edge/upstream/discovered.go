package upstream

import (
	"net/url"
	"slices"
	"time"

	"perigee/edge/discovery"
)

// SetDiscovered makes eps the service's discovered backends. One found
// before keeps its state (health, ejection, latency, in-flight) by URL;
// its weight follows discovery only when discovery changes it, so a weight
// a policy set holds until then. One no longer found drains: it takes no
// new requests, and those in flight finish.
func (s *Service) SetDiscovered(eps []discovery.Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.all.Load()
	known := map[string]*Backend{}
	for _, b := range append(slices.Clone(s.draining), old...) {
		known[b.URL.String()] = b
	}
	var all []*Backend
	for _, b := range old {
		if b.Source != SourceDiscovery {
			all = append(all, b)
		}
	}
	kept := map[*Backend]bool{}
	for _, e := range eps {
		b := known[e.URL]
		if b != nil && b.Source != SourceDiscovery {
			continue // a static or actuator backend is already there
		}
		if b == nil {
			u, err := url.Parse(e.URL)
			if err != nil {
				continue // the resolver builds these URLs; nothing to serve
			}
			b = newBackend(u, e.Weight, SourceDiscovery)
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
	var draining []*Backend
	for _, b := range append(s.draining, old...) {
		if b.Source == SourceDiscovery && !kept[b] && b.InFlight() > 0 && !slices.Contains(draining, b) {
			draining = append(draining, b)
		}
	}
	s.draining = draining
	s.all.Store(&all)
	s.changedAt.Store(time.Now().UnixNano())
	s.log.Info("discovered backends changed", "backends", len(eps), "draining", len(draining))
	s.refreshLocked()
}
