package edge

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"perigee/edge/config"
	"perigee/edge/upstream"
	"perigee/policies"
	"perigee/policies/actuator"
	"perigee/telemetry"
)

// startPolicies builds the actuators and the policy engine and runs them
// until ctx ends. The engine is created even without policies, so that a
// reload can add some.
func (n *Node) startPolicies(ctx context.Context, cfg *config.Config) error {
	n.actuators = map[string]actuator.Actuator{}
	bounds := map[string]policies.ServiceBounds{}
	for name, svc := range cfg.Services {
		if svc.Scale == nil {
			continue
		}
		spec := *svc.Scale
		spec.Command = expandSelf(spec.Command)
		a, err := actuator.New(name, spec, n, n.log)
		if err != nil {
			return fmt.Errorf("%s: service %q: %w", cfg.Pos("services", name, "scale"), name, err)
		}
		n.actuators[name] = a
		bounds[name] = policies.ServiceBounds{Min: spec.Min, Max: spec.Max, MaxStep: spec.MaxStep, MinWeight: 1}
	}
	specs := policySpecs(cfg)
	n.policySampler = n.metrics.NewSampler(cfg.Node.ID, cfg.Node.Region, n.services)
	engine, err := policies.NewEngine(policies.EngineConfig{
		Node: cfg.Node.ID, Region: cfg.Node.Region, Policies: specs, Bounds: bounds,
		Source: policySource{n}, Target: policyTarget{n}, Actuators: n.actuators,
		Log: n.log.With("component", "policies"),
	})
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Pos("policies"), err)
	}
	n.engine = engine
	for name, a := range n.actuators {
		go func() {
			// Bring the service to its minimum; policies take it from there.
			if err := a.Scale(ctx, bounds[name].Min, "start at min"); err != nil {
				n.log.Error("starting replicas", "service", name, "err", err)
			}
		}()
	}
	go n.engine.Run(ctx)
	return nil
}

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

func (t policyTarget) Decided(d telemetry.Decision) {
	if t.n.shipper != nil {
		t.n.shipper.AddDecision(d)
	}
}

// policySource gives the policies a fresh window of the node's figures on
// each evaluation, with its own sampler so it does not steal the windows of
// the mesh or the shipper.
type policySource struct{ n *Node }

func (s policySource) IsLeader() bool { return s.n.isLeader() }

func (s policySource) Snapshot() policies.Snapshot {
	now := time.Now()
	sample := s.n.policySampler.Sample(now)
	snap := policies.Snapshot{
		Time:     now,
		Node:     policies.NodeFigures{CPU: sample.CPU, MemBytes: sample.MemBytes, InFlight: sample.InFlight},
		Services: map[string]policies.ServiceFigures{},
		Region:   s.n.regionFigures(),
	}
	for _, svc := range s.n.services() {
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

// policyTarget applies node-local decisions to the live services and gates.
type policyTarget struct{ n *Node }

func (t policyTarget) service(name string) (*upstream.Service, error) {
	svc := t.n.state.Load().services[name]
	if svc == nil {
		return nil, fmt.Errorf("no service %q", name)
	}
	return svc, nil
}

func (t policyTarget) SetWeight(service, backend string, w int) error {
	svc, err := t.service(service)
	if err != nil {
		return err
	}
	return svc.SetWeight(backend, w)
}

func (t policyTarget) Eject(service, backend string, d time.Duration) error {
	svc, err := t.service(service)
	if err != nil {
		return err
	}
	return svc.Eject(backend, d)
}

func (t policyTarget) Restore(service, backend string) error {
	svc, err := t.service(service)
	if err != nil {
		return err
	}
	return svc.Restore(backend)
}

func (t policyTarget) SetLimit(route string, rps float64, burst int) error {
	if !t.n.hasRoute(route) {
		return fmt.Errorf("no route %q", route)
	}
	t.n.gates.Get(route).SetLimit(rps, burst)
	return nil
}

func (t policyTarget) SetShed(route string, fraction float64) error {
	if !t.n.hasRoute(route) {
		return fmt.Errorf("no route %q", route)
	}
	t.n.gates.Get(route).SetShed(fraction)
	return nil
}

func (n *Node) hasRoute(name string) bool {
	for _, r := range n.state.Load().cfg.Routes {
		if r.Name == name {
			return true
		}
	}
	return false
}

// AddBackend registers a backend an actuator started. It is remembered at
// node level, so that a config reload keeps it.
func (n *Node) AddBackend(service, url string) error {
	n.dynamicMu.Lock()
	defer n.dynamicMu.Unlock()
	svc := n.state.Load().services[service]
	if svc == nil {
		return fmt.Errorf("no service %q", service)
	}
	if err := svc.AddBackend(url, 1); err != nil {
		return err
	}
	n.dynamic[service] = append(n.dynamic[service], url)
	return nil
}

// RemoveBackend forgets a backend an actuator stopped.
func (n *Node) RemoveBackend(service, url string) error {
	n.dynamicMu.Lock()
	defer n.dynamicMu.Unlock()
	list := n.dynamic[service]
	for i, u := range list {
		if u == url {
			n.dynamic[service] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	svc := n.state.Load().services[service]
	if svc == nil {
		return fmt.Errorf("no service %q", service)
	}
	return svc.RemoveBackend(url)
}
