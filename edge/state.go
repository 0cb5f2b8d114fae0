package edge

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"perigee/edge/accesslog"
	"perigee/edge/admission"
	"perigee/edge/config"
	"perigee/edge/metrics"
	"perigee/edge/route"
	"perigee/edge/upstream"
	"perigee/runtime/wasm"
)

// state is everything one config version builds: its routes and services.
// Requests hold a reference while they run, so a reload retires a state
// only after its last request is done.
type state struct {
	cfg        *config.Config
	routes     *route.Table[*routeEntry]
	services   map[string]*upstream.Service
	list       []*upstream.Service // the same, for scrapes and samples
	access     *accesslog.Logger
	transforms *wasm.Set // nil when the config has none
	refs       atomic.Int64
}

// routeEntry is what a matched request needs, resolved once per config.
type routeEntry struct {
	name    string
	service *upstream.Service
	series  *metrics.RouteSeries
	gate    *admission.Gate
	handler http.Handler
	// clientBody bounds each wait for the client's request body;
	// tunnelIdle, an upgraded connection's silence both ways.
	clientBody, tunnelIdle time.Duration
}

// buildState turns a validated config into live services and routes. prev
// lends its backends so their health and latency carry over.
func (n *Node) buildState(ctx context.Context, cfg *config.Config, prev *state) (*state, error) {
	st := &state{cfg: cfg, services: map[string]*upstream.Service{}, access: n.accessLogger(cfg)}
	for name, sc := range cfg.Services {
		var was *upstream.Service
		if prev != nil {
			was = prev.services[name]
		}
		svc, err := upstream.NewService(name, sc.Config, was, n.opts.Log)
		if err != nil {
			return nil, err
		}
		for _, u := range n.scaling.added(name) {
			if err := svc.AddBackend(u, 1); err != nil {
				return nil, err
			}
		}
		st.services[name] = svc
		st.list = append(st.list, svc)
	}
	var prevSet *wasm.Set
	if prev != nil {
		prevSet = prev.transforms
	}
	set, err := n.transforms.load(ctx, cfg, prevSet)
	if err != nil {
		return nil, err
	}
	st.transforms = set
	rules := make([]route.Rule[*routeEntry], 0, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		svc := st.services[rc.Service]
		if svc == nil {
			return nil, fmt.Errorf("route %q: unknown service %q", rc.Name, rc.Service)
		}
		tm := rc.Timeouts.Over(cfg.Timeouts.Stream)
		h := n.proxy.Handler(svc, tm)
		if len(rc.Transforms) > 0 {
			chain, err := set.Chain(rc.Transforms...)
			if err != nil {
				st.close()
				return nil, fmt.Errorf("%s: route %q: %w", cfg.Pos("routes"), rc.Name, err)
			}
			h = chain.Then(&rewritten{route: rc.Name, transforms: strings.Join(rc.Transforms, ", "), next: h})
		}
		// Steering comes first: a client sent elsewhere costs nothing here.
		h = n.fleet.steer(rc.Steer, h)
		rules = append(rules, route.Rule[*routeEntry]{
			Host: rc.Match.Host, PathPrefix: rc.Match.PathPrefix, Methods: rc.Match.Methods,
			Target: &routeEntry{name: rc.Name, service: svc, series: n.metrics.Route(rc.Name, rc.Service), gate: n.gates.Get(rc.Name), handler: h, clientBody: tm.ClientBody.D(), tunnelIdle: tm.TunnelIdle.D()},
		})
	}
	st.routes = route.New(rules)
	for _, svc := range st.list {
		svc.Start(n.proxy.Client(svc.Protocol()))
	}
	return st, nil
}

// acquire returns the current state with a reference held. The re-check
// closes the race with a reload: a request that took a reference on a state
// already swapped out lets it go and takes the new one, so a retired state
// that has reached zero references is never used again.
func (n *Node) acquire() *state {
	for {
		st := n.state.Load()
		st.refs.Add(1)
		if n.state.Load() == st {
			return st
		}
		st.refs.Add(-1)
	}
}

func (st *state) release() { st.refs.Add(-1) }

// retire waits for the old state's requests to finish, then stops its
// health checks. Nothing else of it needs closing: connections are pooled
// node-wide.
func (n *Node) retire(old *state) {
	for old.refs.Load() > 0 {
		time.Sleep(10 * time.Millisecond)
		runtime.Gosched()
	}
	old.close()
}

// close stops the state's health checks and releases its transforms.
func (st *state) close() {
	for _, svc := range st.list {
		svc.Close()
	}
	if st.transforms != nil {
		st.transforms.Release()
	}
}
