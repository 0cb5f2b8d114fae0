package policies

import (
	"context"
	"fmt"
	"sync"
	"time"

	"perigee/policies/actuator"
	"perigee/telemetry"
)

// scaler hands scale decisions for one service to its actuator. Under Run a
// worker calls the actuator, so a slow scale-up never stalls a policy; a
// newer request replaces one not yet started. Right before each call it
// asks the source for leadership again and drops the call when the term
// it was decided under is no longer held.
type scaler struct {
	e       *Engine
	service string
	act     actuator.Actuator
	wake    chan struct{}

	mu      sync.Mutex
	stable  *stabilizer
	desired int // -1 until the first request
	failed  bool
	reason  string
	policy  string
	term    uint64
}

func newScaler(e *Engine, service string, act actuator.Actuator, b actuator.Behavior) *scaler {
	return &scaler{e: e, service: service, act: act, wake: make(chan struct{}, 1), desired: -1, stable: newStabilizer(b)}
}

// stabilize records rec as a recommendation at now and returns what to ask
// for instead, from the replicas asked for so far, with a note when that
// differs.
func (s *scaler) stabilize(now time.Time, rec int) (int, string) {
	current := s.desiredOr(s.act.Replicas())
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stable.recommend(now, current, rec)
}

func (s *scaler) desiredOr(current int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.desired < 0 {
		return current
	}
	return s.desired
}

// settled reports whether n is already asked for and did not fail.
func (s *scaler) settled(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.desired == n && !s.failed
}

// request asks for n replicas: at once when the engine scales
// synchronously, otherwise through the worker.
func (s *scaler) request(ctx context.Context, n int, reason, policy string, term uint64) error {
	from := s.desiredOr(s.act.Replicas())
	s.mu.Lock()
	s.stable.changed(s.e.now(), from, n)
	s.desired, s.failed, s.reason, s.policy, s.term = n, false, reason, policy, term
	s.mu.Unlock()
	if s.e.cfg.SyncScale {
		err := s.call(ctx, n, reason, term)
		if err != nil {
			s.fail(n)
		}
		return err
	}
	select {
	case s.wake <- struct{}{}:
	default: // a wake-up is already pending and will read the newest value
	}
	return nil
}

func (s *scaler) fail(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.desired == n {
		s.failed = true
	}
}

func (s *scaler) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		n, reason, policy, term := s.desired, s.reason, s.policy, s.term
		s.mu.Unlock()
		if err := s.call(ctx, n, reason, term); err != nil && ctx.Err() == nil {
			s.fail(n)
			s.e.record(telemetry.Decision{
				Time: s.e.now(), Policy: policy, Action: string(Scale), Service: s.service,
				Value: float64(n), Reason: reason, Rejected: "actuator: " + err.Error(),
			})
		}
	}
}

// held says whether the source still leads under term.
func (s *scaler) held(term uint64) bool {
	now, ok := s.e.cfg.Source.Leadership()
	return ok && now == term
}

// call passes one request to the actuator if term is still held, with a
// Held that lets the actuator stop retrying once it is not.
func (s *scaler) call(ctx context.Context, n int, reason string, term uint64) error {
	if !s.held(term) {
		return fmt.Errorf("dropped before the actuator: term %d: %w", term, actuator.ErrDeposed)
	}
	return s.act.Scale(ctx, actuator.Request{
		Replicas: n, Reason: reason, Term: term,
		Held: func() bool { return s.held(term) },
	})
}
