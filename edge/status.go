package edge

import (
	"runtime"
	"time"

	"perigee/edge/admin"
	"perigee/edge/upstream"
)

// The node answers the admin API's own endpoints; each part mounts its
// own beside them.
var _ admin.Node = (*Node)(nil)

// Status is GET /status.
func (n *Node) Status() any {
	st := n.state.Load()
	return map[string]any{
		"node":        st.cfg.Node,
		"config":      st.cfg.Path,
		"started":     n.started,
		"uptime":      time.Since(n.started).Round(time.Second).String(),
		"listen":      n.Addrs(),
		"spki_sha256": n.SPKIHash(),
		"goroutines":  runtime.NumGoroutine(),
		"last_reload": n.reloads.latest(),
		"load":        n.sampler.Latest(),
	}
}

// Routes is GET /routes.
func (n *Node) Routes() any { return n.state.Load().cfg.Routes }

// Config is GET /config: the config in force, defaults filled in.
func (n *Node) Config() any { return n.state.Load().cfg }

// Services is GET /services: every backend's health, weight, in-flight and
// latency.
func (n *Node) Services() any {
	now := time.Now()
	type service struct {
		Name     string            `json:"name"`
		Balancer string            `json:"balancer"`
		Healthy  int               `json:"healthy"`
		Backends []upstream.Status `json:"backends"`
	}
	st := n.state.Load()
	out := make([]service, 0, len(st.list))
	for _, s := range st.list {
		v := service{Name: s.Name, Balancer: st.cfg.Services[s.Name].Balancer, Healthy: len(s.Healthy())}
		for _, b := range s.Backends() {
			v.Backends = append(v.Backends, b.Status(now))
		}
		out = append(out, v)
	}
	return out
}
