package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"perigee/units"
)

// Circuit holds Envoy's circuit breaker thresholds for one service. Past
// one, a request is refused at once (503) rather than queued without bound.
type Circuit struct {
	MaxRequests           int            `yaml:"max_requests" json:"max_requests"`                         // in flight to the service
	MaxPending            int            `yaml:"max_pending" json:"max_pending"`                           // waiting for a max_requests slot
	PendingTimeout        units.Duration `yaml:"pending_timeout" json:"pending_timeout"`                   // how long one may wait
	MaxRetries            int            `yaml:"max_retries" json:"max_retries"`                           // retries in flight
	MaxRequestsPerBackend int            `yaml:"max_requests_per_backend" json:"max_requests_per_backend"` // 0: no limit
}

// Envoy's defaults for the thresholds a config leaves out.
const (
	DefaultMaxRequests = 1024
	DefaultMaxRetries  = 3
)

// SetDefaults fills what the config leaves out. max_pending defaults to 0:
// nothing waits, a request past max_requests is refused.
func (c *Circuit) SetDefaults() {
	setInt(&c.MaxRequests, DefaultMaxRequests)
	setInt(&c.MaxRetries, DefaultMaxRetries)
	setDur(&c.PendingTimeout, time.Second)
}

// maxThreshold bounds every threshold, so a typo cannot mean "unbounded".
const maxThreshold = 1 << 20

// Validate reports every problem as "field: what".
func (c Circuit) Validate() error {
	var errs []error
	for _, f := range []struct {
		name     string
		v, least int
	}{
		{"max_requests", c.MaxRequests, 1}, {"max_pending", c.MaxPending, 0},
		{"max_retries", c.MaxRetries, 0}, {"max_requests_per_backend", c.MaxRequestsPerBackend, 0},
	} {
		if f.v < f.least || f.v > maxThreshold {
			errs = append(errs, fmt.Errorf("%s: circuit %s must be %d..%d, got %d", f.name, f.name, f.least, maxThreshold, f.v))
		}
	}
	if d := c.PendingTimeout.D(); d <= 0 || d > time.Minute {
		errs = append(errs, fmt.Errorf("pending_timeout: circuit pending_timeout must be over 0 and at most 1m, got %s", d))
	}
	return errors.Join(errs...)
}

// Overflow reasons: which threshold refused a request, as the metrics and
// the access log name it.
const (
	overRequests = iota
	overPending
	overRetries
	overBackend
)

var overflowReasons = [...]string{"max_requests", "max_pending", "max_retries", "max_requests_per_backend"}

// OverflowError is a request a circuit breaker refused.
type OverflowError struct {
	Service, Reason string
}

func (e *OverflowError) Error() string {
	return fmt.Sprintf("service %s: circuit breaker open: %s", e.Service, e.Reason)
}

// breaker counts what the thresholds bound. It outlives a reload (the next
// service takes it over), so requests that began before the reload still
// count, and its overflow counters only grow.
type breaker struct {
	limits   atomic.Pointer[Circuit]
	active   atomic.Int64
	pending  atomic.Int64
	retries  atomic.Int64
	freed    chan struct{} // a slot came free: wakes one pending request
	overflow [len(overflowReasons)]atomic.Uint64
}

func newBreaker() *breaker { return &breaker{freed: make(chan struct{}, 1)} }

func (br *breaker) refuse(service string, reason int) error {
	br.overflow[reason].Add(1)
	return &OverflowError{Service: service, Reason: overflowReasons[reason]}
}

// take claims a max_requests slot, waiting as one of at most max_pending
// requests, each at most pending_timeout, when none is free.
func (br *breaker) take(ctx context.Context, service string) error {
	lim := br.limits.Load()
	if br.tryTake(lim) {
		return nil
	}
	if br.pending.Add(1) > int64(lim.MaxPending) {
		br.pending.Add(-1)
		if lim.MaxPending == 0 {
			return br.refuse(service, overRequests)
		}
		return br.refuse(service, overPending) // the queue is full
	}
	defer br.pending.Add(-1)
	// Once more, now that we count as pending: a slot freed since the first
	// try saw no one pending and woke no one.
	if br.tryTake(lim) {
		return nil
	}
	t := time.NewTimer(lim.PendingTimeout.D())
	defer t.Stop()
	for {
		select {
		case <-br.freed:
			if br.tryTake(br.limits.Load()) {
				br.wake() // there may be room for the next one too
				return nil
			}
		case <-t.C:
			return br.refuse(service, overPending)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (br *breaker) tryTake(lim *Circuit) bool {
	if br.active.Add(1) <= int64(lim.MaxRequests) {
		return true
	}
	br.active.Add(-1)
	return false
}

// give frees a slot, and wakes a pending request only when there is one,
// so the common path touches no channel.
func (br *breaker) give() {
	br.active.Add(-1)
	if br.pending.Load() > 0 {
		br.wake()
	}
}

func (br *breaker) wake() {
	select {
	case br.freed <- struct{}{}:
	default:
	}
}

// Lease is one attempt admitted to a backend by the service's breakers.
// End releases it when the response is done (or the attempt failed).
type Lease struct {
	Backend *Backend
	br      *breaker
	retry   bool
}

// End is the lease's release; call it exactly once.
func (l Lease) End() {
	l.Backend.end()
	if l.retry {
		l.br.retries.Add(-1)
	}
	l.br.give()
}

// Acquire picks a backend for r (avoiding skip when it can) and admits the
// attempt through the circuit breakers. retry says the attempt is one the
// caller got from RetryAllowed; its retry slot now belongs to the lease.
// A refused attempt is an *OverflowError.
func (s *Service) Acquire(r *http.Request, skip *Backend, retry bool) (Lease, error) {
	br := s.breaker
	releaseRetry := func() {
		if retry {
			br.retries.Add(-1)
		}
	}
	if err := br.take(r.Context(), s.Name); err != nil {
		releaseRetry()
		return Lease{}, err
	}
	perBackend := int64(br.limits.Load().MaxRequestsPerBackend)
	for range 3 { // another backend may have room
		b, err := s.Pick(r, skip)
		if err != nil {
			br.give()
			releaseRetry()
			return Lease{}, err
		}
		if n := b.inFlight.Add(1); perBackend == 0 || n <= perBackend {
			return Lease{Backend: b, br: br, retry: retry}, nil
		}
		b.inFlight.Add(-1)
	}
	br.give()
	releaseRetry()
	return Lease{}, br.refuse(s.Name, overBackend)
}

// retryAllowed claims a retry slot under max_retries.
func (br *breaker) retryAllowed(service string) bool {
	if br.retries.Add(1) <= int64(br.limits.Load().MaxRetries) {
		return true
	}
	br.retries.Add(-1)
	_ = br.refuse(service, overRetries)
	return false
}

// SetCircuit changes the service's thresholds until the next reload, as a
// policy asks; they are validated like the config's.
func (s *Service) SetCircuit(c Circuit) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("service %s: circuit: %w", s.Name, err)
	}
	s.breaker.limits.Store(&c)
	return nil
}

// CircuitStatus is the breakers' state as /services shows it.
type CircuitStatus struct {
	Circuit
	Active   int64             `json:"active"`
	Pending  int64             `json:"pending"`
	Retries  int64             `json:"retries"`
	Open     bool              `json:"open"` // max_requests reached: new requests wait or are refused
	Overflow map[string]uint64 `json:"overflow"`
}

// CircuitStatus reads the breakers.
func (s *Service) CircuitStatus() CircuitStatus {
	br := s.breaker
	c := CircuitStatus{
		Circuit: *br.limits.Load(), Active: br.active.Load(), Pending: br.pending.Load(),
		Retries: br.retries.Load(), Overflow: map[string]uint64{},
	}
	c.Open = c.Active >= int64(c.MaxRequests)
	for i, r := range overflowReasons {
		c.Overflow[r] = br.overflow[i].Load()
	}
	return c
}
