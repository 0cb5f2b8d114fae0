package upstream

import (
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"perigee/units"
)

func breakerService(t *testing.T, c Circuit, weights ...int) *Service {
	t.Helper()
	s := service(t, RoundRobin, weights...)
	if err := s.SetCircuit(withDefaults(c)); err != nil {
		t.Fatal(err)
	}
	return s
}

func withDefaults(c Circuit) Circuit { c.SetDefaults(); return c }

func overflowReason(t *testing.T, err error) string {
	t.Helper()
	var o *OverflowError
	if !errors.As(err, &o) {
		t.Fatalf("got %v, want an overflow", err)
	}
	return o.Reason
}

func TestCircuitRefusesPastMaxRequestsAndCloses(t *testing.T) {
	s := breakerService(t, Circuit{MaxRequests: 2}, 1, 1)
	var held []Lease
	for range 2 {
		l, err := s.Acquire(plain(0), nil, false)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	for range 8 {
		_, err := s.Acquire(plain(0), nil, false)
		if r := overflowReason(t, err); r != "max_requests" {
			t.Fatalf("reason %q", r)
		}
	}
	st := s.CircuitStatus()
	if !st.Open || st.Active != 2 || st.Overflow["max_requests"] != 8 {
		t.Fatalf("status %+v", st)
	}
	held[0].End()
	l, err := s.Acquire(plain(0), nil, false)
	if err != nil {
		t.Fatalf("the breaker did not close when a request ended: %v", err)
	}
	l.End()
	held[1].End()
	if st := s.CircuitStatus(); st.Open || st.Active != 0 {
		t.Fatalf("after all ended: %+v", st)
	}
	for _, b := range s.Backends() {
		if b.InFlight() != 0 {
			t.Fatalf("backend in flight %d after all ended", b.InFlight())
		}
	}
}

func TestCircuitPendingIsBoundedInNumberAndTime(t *testing.T) {
	// Long enough for waitFor to see the request pending on a loaded machine.
	s := breakerService(t, Circuit{MaxRequests: 1, MaxPending: 1, PendingTimeout: units.Duration(time.Minute)}, 1)
	first, err := s.Acquire(plain(0), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error)
	go func() {
		l, err := s.Acquire(plain(0), nil, false)
		if err == nil {
			l.End()
		}
		got <- err
	}()
	waitFor(t, "one request pending", func() bool { return s.CircuitStatus().Pending == 1 })
	if _, err := s.Acquire(plain(0), nil, false); overflowReason(t, err) != "max_pending" {
		t.Fatal("a second pending request was queued past max_pending 1")
	}
	first.End()
	if err := <-got; err != nil {
		t.Fatalf("the pending request did not get the freed slot: %v", err)
	}
	// Nobody frees the slot now: a pending request gives up at its timeout.
	s = breakerService(t, Circuit{MaxRequests: 1, MaxPending: 1, PendingTimeout: units.Duration(50 * time.Millisecond)}, 1)
	hold, _ := s.Acquire(plain(0), nil, false)
	defer hold.End()
	if _, err := s.Acquire(plain(0), nil, false); overflowReason(t, err) != "max_pending" {
		t.Fatal("a pending request that timed out is not a max_pending overflow")
	}
}

func TestCircuitPerBackendLimit(t *testing.T) {
	s := breakerService(t, Circuit{MaxRequestsPerBackend: 1}, 1, 1)
	a, err := s.Acquire(plain(0), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Acquire(plain(0), nil, false)
	if err != nil || b.Backend == a.Backend {
		t.Fatalf("second request: %v, same backend %v", err, b.Backend == a.Backend)
	}
	if _, err := s.Acquire(plain(0), nil, false); overflowReason(t, err) != "max_requests_per_backend" {
		t.Fatal("both backends full, yet admitted")
	}
	if s.CircuitStatus().Active != 2 {
		t.Fatal("a refused request kept its service slot")
	}
	a.End()
	b.End()
}

func TestCircuitMaxRetries(t *testing.T) {
	s := breakerService(t, Circuit{MaxRetries: 1}, 1, 1)
	if !s.RetryAllowed() {
		t.Fatal("first retry refused")
	}
	l, err := s.Acquire(plain(0), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.RetryAllowed() {
		t.Fatal("a second concurrent retry passed max_retries 1")
	}
	l.End()
	if !s.RetryAllowed() {
		t.Fatal("the retry slot was not released when the retry ended")
	}
	if s.CircuitStatus().Overflow["max_retries"] != 1 {
		t.Fatal("retry overflow not counted")
	}
}

func TestCircuitSurvivesReload(t *testing.T) {
	s := breakerService(t, Circuit{MaxRequests: 1}, 1)
	l, err := s.Acquire(plain(0), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	c.Circuit = withDefaults(Circuit{MaxRequests: 1})
	s2, err := NewService("svc", c, s, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Acquire(plain(0), nil, false); err == nil {
		t.Fatal("a request in flight before the reload no longer counts")
	}
	l.End()
	if _, err := s2.Acquire(plain(0), nil, false); err != nil {
		t.Fatal(err)
	}
	if s2.CircuitStatus().Overflow["max_requests"] != 1 {
		t.Fatal("overflow count lost or wrong across the reload")
	}
}

func TestCircuitValidate(t *testing.T) {
	bad := []Circuit{
		{MaxRequests: -1}, {MaxPending: -1}, {MaxRetries: -1}, {MaxRequestsPerBackend: 1 << 30},
		{PendingTimeout: units.Duration(-time.Second)},
	}
	for _, c := range bad {
		if err := withDefaults(c).Validate(); err == nil {
			t.Fatalf("%+v accepted", c)
		}
	}
	cfg := Config{Backends: []BackendConfig{{URL: "http://127.0.0.1:1"}}, Circuit: Circuit{MaxRetries: -2}}
	cfg.SetDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "circuit.max_retries:") {
		t.Fatalf("config error %v does not name circuit.max_retries", err)
	}
	s := service(t, RoundRobin, 1)
	if err := s.SetCircuit(Circuit{MaxRequests: 0}); err == nil {
		t.Fatal("SetCircuit accepted max_requests 0")
	}
}

// Many requests through 2 slots and a queue big enough for all: none is
// refused (no wake-up is lost) and never more than 2 are admitted at once.
func TestCircuitPendingLosesNoWakeUp(t *testing.T) {
	s := breakerService(t, Circuit{MaxRequests: 2, MaxPending: 64, PendingTimeout: units.Duration(20 * time.Second)}, 1)
	var peak, now atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				l, err := s.Acquire(plain(0), nil, false)
				if err != nil {
					errs <- err
					return
				}
				n := now.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				runtime.Gosched()
				now.Add(-1)
				l.End()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("refused with room in the queue: %v", err)
	}
	if peak.Load() > 2 {
		t.Fatalf("%d admitted at once past max_requests 2", peak.Load())
	}
}
