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
// latency, and whether the service is in panic mode.
func (n *Node) Services() any {
	now := time.Now()
	st := n.state.Load()
	out := make([]upstream.ServiceStatus, 0, len(st.list))
	for _, s := range st.list {
		out = append(out, s.Status(now))
	}
	return out
}
