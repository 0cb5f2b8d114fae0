package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"perigee/edge/discovery"
)

// ErrNoHealthy means every backend of the service is down or ejected.
var ErrNoHealthy = errors.New("no healthy backend")

// Service is a pool of backends behind one balancer.
type Service struct {
	Name string
	cfg  Config
	log  *slog.Logger

	mu       sync.Mutex // serialises membership and health changes
	all      atomic.Pointer[[]*Backend]
	healthy  atomic.Pointer[[]*Backend]
	pool     atomic.Pointer[[]*Backend] // what Pick balances over: healthy, or all in panic mode
	balancer balancer
	budget   retryBudget
	breaker  *breaker
	panicked atomic.Bool // balancing across all backends: too few healthy
	wake     *time.Timer // fires when the next ejection ends; guarded by mu
	closed   bool        // guarded by mu: no more wake-ups

	carried   map[string]*Backend // guarded by mu: the previous version's backends, by URL
	gone      []goneBackend       // guarded by mu: discovered once, not any more
	changedAt atomic.Int64        // unix nanos: the backend set last changed
	watcher   *discovery.Watcher  // nil without discovery
	checkNow  chan struct{}       // wakes the health checks for unchecked backends

	stop context.CancelFunc
	done sync.WaitGroup
}

// NewService builds a service from its config. Backends of the service's
// previous version (prev, nil at first) whose URL stays keep their live
// state (health, latency, ejections); their weight is the config's again.
// Those an actuator or discovery added carry over too: AddBackend takes
// them back, and a service whose discovery names the same endpoints
// (however retuned) starts from the previous set until its first answer.
func NewService(name string, c Config, prev *Service, log *slog.Logger) (*Service, error) {
	s := &Service{Name: name, cfg: c, log: log.With("service", name), balancer: newBalancer(&c)}
	s.budget.init(c.Retry.Budget)
	s.carried = map[string]*Backend{}
	s.checkNow = make(chan struct{}, 1)
	s.breaker = newBreaker()
	var found []*Backend
	if prev != nil {
		for _, b := range prev.Backends() {
			s.carried[b.URL.String()] = b
			if b.Source == SourceDiscovery && c.Discovery.Enabled() && prev.cfg.Discovery.SameEndpoints(c.Discovery) {
				found = append(found, b)
			}
		}
		s.breaker = prev.breaker
	}
	byURL := s.carried
	limits := c.Circuit
	limits.SetDefaults()
	s.breaker.limits.Store(&limits)
	var all []*Backend
	for _, bc := range c.Backends {
		if b, ok := byURL[bc.URL]; ok && b.Source == SourceStatic {
			b.weight.Store(int32(bc.Weight))
			all = append(all, b)
			continue
		}
		u, err := url.Parse(bc.URL)
		if err != nil {
			return nil, fmt.Errorf("service %s: backend %q: %w", name, bc.URL, err)
		}
		all = append(all, newBackend(u, bc.Weight, SourceStatic))
	}
	if c.Discovery.Enabled() {
		var last []discovery.Endpoint
		for _, b := range found {
			if !slices.Contains(all, b) {
				all = append(all, b)
				b.mu.Lock()
				last = append(last, discovery.Endpoint{URL: b.URL.String(), Weight: b.found})
				b.mu.Unlock()
			}
		}
		w, err := discovery.NewWatcher(c.Discovery, last, s.SetDiscovered, s.log)
		if err != nil {
			return nil, fmt.Errorf("service %s: discovery: %w", name, err)
		}
		s.watcher = w
	}
	if c.Health.Path == "" {
		for _, b := range all {
			b.unchecked.Store(false) // no check will come to clear it
		}
	}
	s.all.Store(&all)
	s.changedAt.Store(time.Now().UnixNano())
	if prev != nil && slices.Equal(all, prev.Backends()) {
		s.changedAt.Store(prev.changedAt.Load()) // a reload that changed no backend
	}
	s.refresh()
	return s, nil
}

// Backends returns every backend, healthy or not.
func (s *Service) Backends() []*Backend { return *s.all.Load() }

// Healthy returns the backends that may take traffic now.
func (s *Service) Healthy() []*Backend { return *s.healthy.Load() }

// Panic reports whether too few backends are healthy, so every backend
// takes traffic.
func (s *Service) Panic() bool { return s.panicked.Load() }

// refresh recomputes the healthy set and the balancer after any change.
func (s *Service) refresh() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshLocked()
}

// refreshLocked also arms this service's wake-up for the earliest ejection
// to end: ejection state lives on the backend, which a reload hands to the
// next service, so each service must schedule its own return to health.
func (s *Service) refreshLocked() {
	now := time.Now()
	all := *s.all.Load()
	healthy := make([]*Backend, 0, len(all))
	checked := make([]*Backend, 0, len(all)) // the unchecked are not even in panic mode's set
	var next int64
	for _, b := range all {
		if !b.unchecked.Load() {
			checked = append(checked, b)
		}
		if b.Healthy(now) {
			healthy = append(healthy, b)
		}
		if until := b.ejectedUntil.Load(); until > now.UnixNano() && (next == 0 || until < next) {
			next = until
		}
	}
	candidates := healthy
	panicked := s.panicLocked(len(healthy), len(checked))
	if panicked {
		candidates = checked
	}
	if panicked != s.panicked.Swap(panicked) {
		s.log.Warn("panic mode", "on", panicked, "healthy", len(healthy), "of", len(checked))
	}
	s.healthy.Store(&healthy)
	s.pool.Store(&candidates)
	s.balancer.rebuild(checked, candidates)
	s.armLocked(next, now)
}

// panicLocked is Envoy's healthy panic threshold: with fewer than that
// share of backends healthy, the few left would take the whole load, so
// the service spreads it over every backend instead.
func (s *Service) panicLocked(healthy, all int) bool {
	p := s.panicThreshold()
	return p > 0 && all > 0 && healthy*100 < p*all
}

func (s *Service) panicThreshold() int {
	if s.cfg.PanicThreshold == nil {
		return DefaultPanicThreshold
	}
	return *s.cfg.PanicThreshold
}

func (s *Service) armLocked(next int64, now time.Time) {
	if s.wake != nil {
		s.wake.Stop()
		s.wake = nil
	}
	if next == 0 || s.closed {
		return
	}
	s.wake = time.AfterFunc(time.Duration(next-now.UnixNano()), s.refresh)
}

// Pick chooses a backend for r, avoiding skip when another is available.
func (s *Service) Pick(r *http.Request, skip *Backend) (*Backend, error) {
	pool := *s.pool.Load()
	if skip != nil && len(pool) > 1 {
		for range 3 {
			if b := s.balancer.pick(r, pool); b != nil && b != skip {
				return b, nil
			}
		}
	}
	if b := s.balancer.pick(r, pool); b != nil {
		return b, nil
	}
	return nil, ErrNoHealthy
}

// Start runs the active health checks until Close.
// Start runs the active health checks and discovery until Close.
func (s *Service) Start(client *http.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.mu.Lock()
	s.carried = nil // what the reload needed of the previous version is taken
	s.mu.Unlock()
	if s.cfg.Health.Path != "" {
		s.done.Add(1)
		go func() { defer s.done.Done(); s.checkLoop(ctx, client) }()
	}
	if s.watcher != nil {
		s.done.Add(1)
		go func() { defer s.done.Done(); s.watcher.Run(ctx) }()
	}
}

// Close stops the health checks, discovery and the ejection wake-ups.
func (s *Service) Close() {
	if s.stop != nil {
		s.stop()
		s.done.Wait()
	}
	s.mu.Lock()
	s.closed = true
	s.armLocked(0, time.Time{})
	s.mu.Unlock()
}

// failurePenalty is the latency a failed request counts as at least: peak
// EWMA takes it at once and forgets it over ewmaDecay.
const failurePenalty = time.Second

// Done records the outcome of one proxied request: its time to response
// headers, and whether it failed (a transport error or a 5xx). Failures in a
// row eject the backend passively.
func (s *Service) Done(b *Backend, took time.Duration, failed bool) {
	now := time.Now()
	b.requests.Add(1)
	if !failed {
		b.observe(took, now)
		b.consecFails.Store(0)
		return
	}
	// A failure counts as a slow answer, so a backend that fails fast does
	// not look cheap to the ewma balancer.
	b.observe(max(took, failurePenalty), now)
	b.failures.Add(1)
	o := s.cfg.Outlier
	if o.ConsecutiveFailures > 0 && b.failedInARow(int32(o.ConsecutiveFailures)) {
		s.ejectForOutlier(b, now)
	}
}

// failedInARow counts one more failure in a row and reports whether there
// are now at least n. The count stops at n: a backend that may not be
// ejected (max_ejected_percent) fails on, and an int32 would overflow.
func (b *Backend) failedInARow(n int32) bool {
	for {
		c := b.consecFails.Load()
		if c >= n {
			return true
		}
		if b.consecFails.CompareAndSwap(c, c+1) {
			return c+1 >= n
		}
	}
}

func (s *Service) ejectForOutlier(b *Backend, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !b.Healthy(now) || !s.mayEjectLocked(now) {
		return
	}
	b.mu.Lock()
	if now.Sub(b.lastEjected) > s.cfg.Outlier.MaxEjection.D() {
		b.ejections = 0 // it behaved for a long while: start the back-off over
	}
	d := min(s.cfg.Outlier.BaseEjection.D()<<min(b.ejections, 16), s.cfg.Outlier.MaxEjection.D())
	b.ejections++
	b.lastEjected = now
	b.mu.Unlock()
	b.consecFails.Store(0)
	s.log.Warn("backend ejected", "backend", b.Addr, "for", d, "reason", "consecutive failures")
	s.ejectLocked(b, now, d)
}

// mayEjectLocked keeps the backends out of rotation, for whatever reason
// (ejected, or marked down by active checks), within max_ejected_percent of
// the service, so a fault everywhere does not empty the pool. Backends
// not yet checked count neither way, as in the panic threshold.
func (s *Service) mayEjectLocked(now time.Time) bool {
	out, n := 0, 0
	for _, b := range *s.all.Load() {
		if b.unchecked.Load() {
			continue
		}
		n++
		if !b.Healthy(now) {
			out++
		}
	}
	return (out+1)*100 <= s.cfg.Outlier.MaxEjectedPercent*n
}

func (s *Service) ejectLocked(b *Backend, now time.Time, d time.Duration) {
	b.ejectedUntil.Store(now.Add(d).UnixNano())
	s.refreshLocked()
}

// Eject takes a backend out of rotation for d, as a policy asks.
func (s *Service) Eject(addr string, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.findLocked(addr)
	if b == nil {
		return fmt.Errorf("service %s has no backend %q", s.Name, addr)
	}
	s.ejectLocked(b, time.Now(), d)
	return nil
}

// Restore ends an ejection early.
func (s *Service) Restore(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.findLocked(addr)
	if b == nil {
		return fmt.Errorf("service %s has no backend %q", s.Name, addr)
	}
	b.ejectedUntil.Store(0)
	s.refreshLocked()
	return nil
}

// SetWeight changes a backend's weight until the next config reload.
func (s *Service) SetWeight(addr string, w int) error {
	if w < 1 || w > 10000 {
		return fmt.Errorf("weight %d out of range 1..10000", w)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.findLocked(addr)
	if b == nil {
		return fmt.Errorf("service %s has no backend %q", s.Name, addr)
	}
	b.weight.Store(int32(w))
	s.refreshLocked()
	return nil
}

// AddBackend adds a backend at runtime (the process actuator's children).
func (s *Service) AddBackend(rawURL string, weight int) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("service %s: bad backend url %q", s.Name, rawURL)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.findLocked(u.Host) != nil {
		return nil
	}
	b := s.carried[u.String()]
	if b == nil || b.Source != SourceActuator {
		b = newBackend(u, weight, SourceActuator)
	}
	all := append(append([]*Backend(nil), *s.all.Load()...), b)
	s.all.Store(&all)
	s.changedAt.Store(time.Now().UnixNano())
	s.refreshLocked()
	return nil
}

// RemoveBackend takes a backend out for good; requests in flight finish.
func (s *Service) RemoveBackend(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.all.Load()
	all := make([]*Backend, 0, len(old))
	for _, b := range old {
		if b.Addr != addr && b.URL.String() != addr {
			all = append(all, b)
		}
	}
	if len(all) == len(old) {
		return fmt.Errorf("service %s has no backend %q", s.Name, addr)
	}
	s.all.Store(&all)
	s.changedAt.Store(time.Now().UnixNano())
	s.refreshLocked()
	return nil
}

// findLocked accepts either host:port or the backend's URL.
func (s *Service) findLocked(addr string) *Backend {
	for _, b := range *s.all.Load() {
		if b.Addr == addr || b.URL.String() == addr {
			return b
		}
	}
	return nil
}

// RetryAllowed claims a retry under the max_retries breaker and spends one
// from the budget; the caller passes the claim on to Acquire.
func (s *Service) RetryAllowed() bool {
	if !s.breaker.retryAllowed(s.Name) {
		return false
	}
	if !s.budget.spend() {
		s.breaker.retries.Add(-1)
		return false
	}
	return true
}

// Attempt notes a first attempt, which earns the budget a fraction of a retry.
func (s *Service) Attempt() { s.budget.earn() }

// Protocol is what the node speaks to the backends: HTTP1, H2C or H2.
func (s *Service) Protocol() string { return s.cfg.Protocol }

// MaxRetries is how many extra tries a request may get.
func (s *Service) MaxRetries() int { return s.cfg.Retry.Attempts }

// ServiceStatus is a service's state as the admin API shows it.
type ServiceStatus struct {
	Name      string            `json:"name"`
	Balancer  string            `json:"balancer"`
	Healthy   int               `json:"healthy"`
	Panic     bool              `json:"panic"`
	Circuit   CircuitStatus     `json:"circuit"`
	Discovery *discovery.Status `json:"discovery,omitempty"`
	Changed   time.Time         `json:"backends_changed"` // when the backend set last changed
	Backends  []Status          `json:"backends"`
}

// Status reads the service's state.
func (s *Service) Status(now time.Time) ServiceStatus {
	v := ServiceStatus{Name: s.Name, Balancer: s.cfg.Balancer, Healthy: len(s.Healthy()), Panic: s.Panic(), Circuit: s.CircuitStatus()}
	v.Changed = time.Unix(0, s.changedAt.Load())
	if s.watcher != nil {
		d := s.watcher.Status()
		v.Discovery = &d
	}
	for _, b := range s.Backends() {
		v.Backends = append(v.Backends, b.Status(now))
	}
	s.mu.Lock()
	for _, b := range s.drainingLocked() {
		if b.InFlight() > 0 {
			st := b.Status(now)
			st.Draining = true
			v.Backends = append(v.Backends, st)
		}
	}
	s.mu.Unlock()
	return v
}
