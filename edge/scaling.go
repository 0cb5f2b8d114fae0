package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"perigee/edge/admin"
	"perigee/edge/admission"
	"perigee/edge/config"
	"perigee/edge/metrics"
	"perigee/edge/upstream"
	"perigee/policies"
	"perigee/policies/actuator"
	"perigee/telemetry"
)

// scaling runs the node's policies: the engine, the actuators it drives,
// the sampler whose windows the policies see, and the backends actuators
// started. It is the node's side of the policy boundary (policies.Source
// and policies.Target) and the actuators' registry, and nothing else is.
type scaling struct {
	log     *slog.Logger
	region  string
	current func() *state // the config state in force
	gates   *admission.Gates
	fleet   *fleet
	ship    *shipping
	metrics *metrics.Metrics

	sampler   *metrics.Sampler // its own, so it does not steal the windows of the mesh or the shipper
	engine    *policies.Engine
	actuators map[string]actuator.Actuator
	stop      context.CancelFunc
	done      sync.WaitGroup

	dynamicMu sync.Mutex          // held while backends are added or a state is built
	dynamic   map[string][]string // backends actuators added, by service

	// circuitsMu is its own: a policy sets a circuit while the engine holds
	// it, and a reload holds dynamicMu while it waits for the engine.
	circuitsMu sync.Mutex
	circuits   map[string]policies.CircuitLimits // what circuit actions set, by service
}

var (
	_ policies.Source   = (*scaling)(nil)
	_ policies.Target   = (*scaling)(nil)
	_ actuator.Registry = (*scaling)(nil)
)

// start builds the actuators and the policy engine and runs them. The
// engine is created even without policies, so that a reload can add some.
func (s *scaling) start(cfg *config.Config, a *admin.API) error {
	s.actuators = map[string]actuator.Actuator{}
	bounds := map[string]policies.ServiceBounds{}
	for name, svc := range cfg.Services {
		if svc.Scale == nil {
			continue
		}
		spec := *svc.Scale
		spec.Command = expandSelf(spec.Command)
		act, err := actuator.New(name, spec, s, s.log)
		if err != nil {
			return fmt.Errorf("%s: service %q: %w", cfg.Pos("services", name, "scale"), name, err)
		}
		s.actuators[name] = act
		bounds[name] = policies.ServiceBounds{Min: spec.Min, Max: spec.Max, MaxStep: spec.MaxStep, MinWeight: 1, Behavior: spec.Behavior}
	}
	actuators := s.actuators
	s.metrics.Gauges("perigee_service_replicas", "Replicas of a scaled service in effect, as its actuator reports them.", []string{"service"}, func(emit metrics.Emit) {
		for name, act := range actuators {
			emit(float64(act.Replicas()), name)
		}
	})
	engine, err := policies.NewEngine(policies.EngineConfig{
		Node: cfg.Node.ID, Region: cfg.Node.Region, Policies: policySpecs(cfg), Bounds: bounds,
		Source: s, Target: s, Actuators: s.actuators, Log: s.log.With("component", "policies"),
	})
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Pos("policies"), err)
	}
	s.engine = engine
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	for name, act := range s.actuators {
		if cfg.Services[name].Scale.Actuator != actuator.KindProcess {
			continue // a remote scale is the region leader's to set, not every node's at start
		}
		s.done.Go(func() {
			// Bring the local replicas to their minimum; policies take it from there.
			if err := act.Scale(ctx, actuator.Request{Replicas: bounds[name].Min, Reason: "start at min"}); err != nil && ctx.Err() == nil {
				s.log.Error("starting replicas", "service", name, "err", err)
			}
		})
	}
	s.done.Go(func() { engine.Run(ctx) })
	a.HandleJSON("GET /policies", func() any { return policyViews(engine.Policies()) })
	a.Handle("GET /decisions", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := 100
		if _, err := fmt.Sscan(r.URL.Query().Get("n"), &limit); err != nil || limit < 1 {
			limit = 100
		}
		admin.WriteJSON(w, http.StatusOK, engine.Decisions(limit))
	}))
	return nil
}

// policyView is what GET /policies shows of a policy: durations as
// strings ("250ms") or seconds named so, as every admin endpoint does.
type policyView struct {
	Name                string    `json:"name"`
	Script              string    `json:"script"`
	Interval            string    `json:"interval"`
	Services            []string  `json:"services,omitempty"`
	DryRun              bool      `json:"dry_run"`
	Runs                uint64    `json:"runs"`
	Errors              uint64    `json:"errors"`
	LimitStops          uint64    `json:"limit_stops"` // evaluations stopped by the deadline or allocation budget
	Decisions           uint64    `json:"decisions"`
	LastRun             time.Time `json:"last_run,omitzero"`
	LastDurationSeconds float64   `json:"last_duration_seconds"`
	LastError           string    `json:"last_error,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at,omitzero"`
	Reloaded            time.Time `json:"reloaded,omitzero"`
}

func policyViews(ps []policies.PolicyStatus) []policyView {
	out := make([]policyView, 0, len(ps))
	for _, p := range ps {
		out = append(out, policyView{p.Name, p.Script, p.Interval.String(), p.Services, p.DryRun, p.Runs, p.Errors,
			p.LimitStops, p.Decisions, p.LastRun, p.LastDuration.Seconds(), p.LastError, p.LastErrorAt, p.Reloaded})
	}
	return out
}

// close stops the policies, then the replicas actuators started (the
// process actuator's children), every actuator at once, so that together
// they take no longer than ctx allows.
func (s *scaling) close(ctx context.Context) error {
	if s.stop != nil {
		s.stop()
	}
	s.done.Wait()
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for name, act := range s.actuators {
		wg.Go(func() {
			if err := act.Close(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("stopping %s replicas: %w", name, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// reload swaps in a new config: build makes its state while the dynamic
// backends hold still, then the policies are replaced. A policy that does
// not compile refuses the whole reload.
func (s *scaling) reload(cfg *config.Config, build func() (*state, error)) (*state, error) {
	s.dynamicMu.Lock()
	defer s.dynamicMu.Unlock()
	st, err := build()
	if err != nil {
		return nil, err
	}
	s.keepCircuits(st)
	if err := s.engine.Reload(policySpecs(cfg)...); err != nil {
		return st, fmt.Errorf("%s: %w", cfg.Pos("policies"), err)
	}
	return st, nil
}

// keepCircuits lays the thresholds policies set over those of st's config,
// as a route's limit outlives a reload; a service st no longer has forgets
// them.
func (s *scaling) keepCircuits(st *state) {
	s.circuitsMu.Lock()
	defer s.circuitsMu.Unlock()
	for name, set := range s.circuits {
		svc, conf := st.services[name], st.cfg.Services[name]
		if svc == nil || conf == nil {
			delete(s.circuits, name)
			continue
		}
		// Over the config's thresholds, not the breaker's: a circuit set
		// while st was built started from the old config's.
		if err := svc.SetCircuit(withLimits(conf.Circuit, set)); err != nil {
			s.log.Error("keeping a policy's circuit over the reload", "service", name, "err", err)
		}
	}
}

// added lists the backends actuators started for service; the caller holds
// dynamicMu, or is the first build.
func (s *scaling) added(service string) []string { return s.dynamic[service] }

// expandSelf lets a command template name this very binary as {self}, so
// the embedded config can start sample backends wherever perigee is.
func expandSelf(cmd string) string {
	if !strings.Contains(cmd, "{self}") {
		return cmd
	}
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	return strings.ReplaceAll(cmd, "{self}", self)
}

// policySpecs are the config's policies in name order.
func policySpecs(cfg *config.Config) []policies.Spec {
	specs := make([]policies.Spec, 0, len(cfg.Policies))
	for _, name := range slices.Sorted(maps.Keys(cfg.Policies)) {
		specs = append(specs, *cfg.Policies[name])
	}
	return specs
}

// Snapshot gives the policies a fresh window of the node's figures, and
// the region's from the fleet.
func (s *scaling) Snapshot() policies.Snapshot {
	now := time.Now()
	sample := s.sampler.Sample(now)
	snap := policies.Snapshot{
		Time:     now,
		Node:     policies.NodeFigures{CPU: sample.CPU, MemBytes: sample.MemBytes, InFlight: sample.InFlight},
		Services: map[string]policies.ServiceFigures{},
		Region:   s.fleet.regionFigures(s.region),
	}
	for _, svc := range s.current().list {
		snap.Services[svc.Name] = serviceFigures(svc, sample.Services[svc.Name], now)
	}
	return snap
}

func serviceFigures(svc *upstream.Service, sample telemetry.ServiceSample, now time.Time) policies.ServiceFigures {
	backends := svc.Backends()
	figs := policies.FiguresFrom(sample, upstream.MeanLatency(backends))
	figs.Backends = make([]policies.BackendFigures, 0, len(backends))
	for _, b := range backends {
		st := b.Status(now)
		errRate := 0.0
		if st.Requests > 0 {
			errRate = float64(st.Failures) / float64(st.Requests)
		}
		figs.Backends = append(figs.Backends, policies.BackendFigures{
			Address: b.Addr, Healthy: st.Healthy, Weight: st.Weight, InFlight: st.InFlight,
			Latency: st.Latency, ErrorRate: errRate,
		})
	}
	return figs
}

// Leadership is the fleet's: the engine asks it before every scale.
func (s *scaling) Leadership() (uint64, bool) { return s.fleet.leadership() }

// Decided ships every decision.
func (s *scaling) Decided(d telemetry.Decision) {
	s.metrics.Decided(d.Policy, d.Action, d.Applied, d.DryRun, d.Rejected)
	s.ship.decision(d)
}

func (s *scaling) service(name string) (*upstream.Service, error) {
	svc := s.current().services[name]
	if svc == nil {
		return nil, fmt.Errorf("no service %q", name)
	}
	return svc, nil
}

func (s *scaling) SetWeight(service, backend string, w int) error {
	svc, err := s.service(service)
	if err != nil {
		return err
	}
	return svc.SetWeight(backend, w)
}

func (s *scaling) Eject(service, backend string, d time.Duration) error {
	svc, err := s.service(service)
	if err != nil {
		return err
	}
	return svc.Eject(backend, d)
}

func (s *scaling) Restore(service, backend string) error {
	svc, err := s.service(service)
	if err != nil {
		return err
	}
	return svc.Restore(backend)
}

func (s *scaling) SetLimit(route string, rps float64, burst int) error {
	if !s.hasRoute(route) {
		return fmt.Errorf("no route %q", route)
	}
	s.gates.Get(route).SetLimit(rps, burst)
	return nil
}

func (s *scaling) SetShed(route string, fraction float64) error {
	if !s.hasRoute(route) {
		return fmt.Errorf("no route %q", route)
	}
	s.gates.Get(route).SetShed(fraction)
	return nil
}

// SetCircuit lays the thresholds a policy names over those in force, and
// remembers them for the next reload (keepCircuits).
func (s *scaling) SetCircuit(service string, c policies.CircuitLimits) error {
	s.circuitsMu.Lock()
	defer s.circuitsMu.Unlock()
	svc, err := s.service(service)
	if err != nil {
		return err
	}
	if err := svc.SetCircuit(withLimits(svc.CircuitStatus().Circuit, c)); err != nil {
		return err
	}
	set, ok := s.circuits[service]
	if !ok {
		set = policies.KeepAll
	}
	if s.circuits == nil {
		s.circuits = map[string]policies.CircuitLimits{}
	}
	s.circuits[service] = c.On(set)
	return nil
}

// withLimits is u with the thresholds c names.
func withLimits(u upstream.Circuit, c policies.CircuitLimits) upstream.Circuit {
	l := c.On(policies.CircuitLimits{MaxRequests: u.MaxRequests, MaxPending: u.MaxPending, MaxRetries: u.MaxRetries, MaxRequestsPerBackend: u.MaxRequestsPerBackend})
	u.MaxRequests, u.MaxPending, u.MaxRetries, u.MaxRequestsPerBackend = l.MaxRequests, l.MaxPending, l.MaxRetries, l.MaxRequestsPerBackend
	return u
}

func (s *scaling) hasRoute(name string) bool {
	_, ok := s.RouteService(name)
	return ok
}

func (s *scaling) RouteService(name string) (string, bool) {
	for _, r := range s.current().cfg.Routes {
		if r.Name == name {
			return r.Service, true
		}
	}
	return "", false
}

// AddBackend registers a backend an actuator started. It is remembered
// here, so that a config reload keeps it.
func (s *scaling) AddBackend(service, url string) error {
	s.dynamicMu.Lock()
	defer s.dynamicMu.Unlock()
	svc, err := s.service(service)
	if err != nil {
		return err
	}
	if err := svc.AddBackend(url, 1); err != nil {
		return err
	}
	s.dynamic[service] = append(s.dynamic[service], url)
	return nil
}

// RemoveBackend forgets a backend an actuator stopped.
func (s *scaling) RemoveBackend(service, url string) error {
	s.dynamicMu.Lock()
	defer s.dynamicMu.Unlock()
	list := s.dynamic[service]
	for i, u := range list {
		if u == url {
			s.dynamic[service] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	svc, err := s.service(service)
	if err != nil {
		return err
	}
	return svc.RemoveBackend(url)
}
