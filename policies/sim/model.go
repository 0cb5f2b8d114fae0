package sim

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"perigee/policies"
	pactuator "perigee/policies/actuator"
	"perigee/telemetry"
)

// The model is the engine's whole world: its node and its actuators.
var (
	_ policies.Source    = (*model)(nil)
	_ policies.Target    = target{}
	_ pactuator.Actuator = actuator{}
)

// model is the simulated fleet: per service, replicas that take Warmup to
// become ready and an M/M/1-like response to load, with a bounded queue.
type model struct {
	now      time.Time
	warmup   time.Duration
	services map[string]*service
}

type service struct {
	name     string
	ready    int
	pending  []time.Time // when each starting replica becomes ready
	queue    float64     // requests waiting
	shed     float64
	limit    float64
	circuit  policies.CircuitLimits // what circuit actions set; 0 means no breaker
	ejected  map[string]time.Time
	row      Row
	figures  policies.ServiceFigures
	failed   float64 // requests/s that failed this tick
	faulty   float64 // of which the backend's own errors, whatever its capacity
	shedRPS  float64
	refused  float64 // of failed, requests/s a breaker refused this tick
	over     bool    // demand above capacity this tick
	capacity float64 // requests/s the serving replicas take this tick
}

// queueSeconds is how much work the queue holds before requests fail.
const queueSeconds = 2.0

func (m *model) service(name string) *service {
	s := m.services[name]
	if s == nil {
		s = &service{name: name, ejected: map[string]time.Time{}}
		m.services[name] = s
	}
	return s
}

func backendName(svc string, i int) string { return fmt.Sprintf("%s-%d", svc, i+1) }

// advance moves a service to the current tick with its row's demand.
func (s *service) advance(now time.Time, dt float64, r Row) {
	s.row = r
	kept := s.pending[:0]
	for _, at := range s.pending {
		if at.After(now) {
			kept = append(kept, at)
		} else {
			s.ready++
		}
	}
	s.pending = kept
	serving := 0
	for i := range s.ready {
		if until, ok := s.ejected[backendName(s.name, i)]; !ok || !now.Before(until) {
			serving++
		}
	}
	admitted := r.RPS * (1 - s.shed)
	if s.limit > 0 {
		admitted = math.Min(admitted, s.limit)
	}
	s.shedRPS = r.RPS - admitted
	// A breaker admits max_requests at a time: by Little's law, at most
	// max_requests over the last tick's mean response time per second.
	// The rest are refused at once, before they can queue.
	s.refused = 0
	if c := float64(s.circuit.MaxRequests); c > 0 {
		resp := s.figures.EWMA.Seconds()
		if resp <= 0 {
			resp = r.LatencyMS / 1000
		}
		if resp > 0 && admitted > c/resp {
			s.refused = admitted - c/resp
			admitted = c / resp
		}
	}
	capacity := float64(serving) * r.Capacity
	s.capacity = capacity
	base := r.LatencyMS / 1000
	s.over = admitted > capacity
	s.queue = math.Max(0, s.queue+(admitted-capacity)*dt)
	s.failed = r.ErrorRate * admitted
	s.faulty = s.failed
	s.failed += s.refused
	if limit := queueSeconds * capacity; s.queue > limit {
		s.failed += (s.queue - limit) / dt
		s.queue = limit
	}
	u := 0.95
	if capacity > 0 {
		u = math.Min(admitted/capacity, 0.95)
	}
	wait := 0.0
	if capacity > 0 {
		wait = s.queue / capacity
	} else if admitted > 0 {
		s.failed = admitted
		wait = queueSeconds
	}
	// Response time in an M/M/1 queue is exponential with mean
	// base/(1-u): its p-quantile is the mean times -ln(1-p).
	mean := base / (1 - u)
	q := func(p float64) time.Duration {
		return time.Duration((mean*-math.Log(1-p) + wait) * float64(time.Second))
	}
	f := policies.ServiceFigures{
		RPS: admitted, P50: q(0.50), P95: q(0.95), P99: q(0.99),
		EWMA:     time.Duration((mean + wait) * float64(time.Second)),
		InFlight: int64(math.Round(admitted * (mean + wait))),
		Queued:   int64(math.Round(s.queue)),
	}
	if admitted > 0 {
		f.ErrorRate = math.Min(1, s.failed/admitted)
	}
	for i := range s.ready {
		name := backendName(s.name, i)
		until, ejected := s.ejected[name]
		f.Backends = append(f.Backends, policies.BackendFigures{
			Address: name, Healthy: !ejected || !now.Before(until), Weight: 1,
			InFlight: f.InFlight / int64(max(serving, 1)), Latency: f.EWMA, ErrorRate: f.ErrorRate,
		})
	}
	s.figures = f
}

// Snapshot is the model's state as the engine's Source.
func (m *model) Snapshot() policies.Snapshot {
	out := policies.Snapshot{Time: m.now, Services: map[string]policies.ServiceFigures{}}
	for name, s := range m.services {
		out.Services[name] = s.figures
	}
	return out
}

// Leadership is held, under term 0: the simulated node is a region of one.
func (m *model) Leadership() (uint64, bool) { return 0, true }

// actuator scales one simulated service.
type actuator struct {
	m   *model
	svc string
}

func (a actuator) Scale(_ context.Context, r pactuator.Request) error {
	n := r.Replicas
	s := a.m.service(a.svc)
	if n < 0 {
		return fmt.Errorf("sim: negative replicas %d", n)
	}
	for s.ready+len(s.pending) < n {
		s.pending = append(s.pending, a.m.now.Add(a.m.warmup))
	}
	// Cancel the replicas that would be ready last, then stop ready ones.
	sort.Slice(s.pending, func(i, j int) bool { return s.pending[i].Before(s.pending[j]) })
	for s.ready+len(s.pending) > n && len(s.pending) > 0 {
		s.pending = s.pending[:len(s.pending)-1]
	}
	s.ready = min(s.ready, n)
	if a.m.warmup == 0 {
		s.ready, s.pending = n, nil
	}
	return nil
}

func (a actuator) Replicas() int               { return a.m.service(a.svc).ready }
func (a actuator) Close(context.Context) error { return nil }
func (m *model) known(svc string) (*service, error) {
	s := m.services[svc]
	if s == nil {
		return nil, fmt.Errorf("sim: no service or route %q in the trace", svc)
	}
	return s, nil
}

// target applies node-local actions to the model, and hands each decision
// to decided; routes are named after their services.
type target struct {
	m       *model
	decided func(telemetry.Decision)
}

func (t target) Decided(d telemetry.Decision) { t.decided(d) }

func (t target) SetWeight(svc, backend string, w int) error {
	_, err := t.m.known(svc)
	return err
}

func (t target) Eject(svc, backend string, d time.Duration) error {
	s, err := t.m.known(svc)
	if err == nil {
		s.ejected[backend] = t.m.now.Add(d)
	}
	return err
}

func (t target) Restore(svc, backend string) error {
	s, err := t.m.known(svc)
	if err == nil {
		delete(s.ejected, backend)
	}
	return err
}

func (t target) SetLimit(route string, rps float64, burst int) error {
	s, err := t.m.known(route)
	if err == nil {
		s.limit = rps
	}
	return err
}

// SetCircuit keeps the thresholds the call names; only max_requests
// changes what the model serves.
func (t target) SetCircuit(svc string, c policies.CircuitLimits) error {
	s, err := t.m.known(svc)
	if err == nil {
		s.circuit = c.On(s.circuit)
	}
	return err
}

func (t target) RouteService(route string) (string, bool) {
	_, ok := t.m.services[route]
	return route, ok
}

func (t target) SetShed(route string, fraction float64) error {
	s, err := t.m.known(route)
	if err == nil {
		s.shed = fraction
	}
	return err
}
