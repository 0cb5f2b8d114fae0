package edge

import (
	"runtime"
	"time"

	"perigee/edge/admin"
	"perigee/edge/upstream"
	"perigee/telemetry"
)

// The node answers the admin API's own endpoints; each part mounts its
// own beside them.
var _ admin.Node = (*Node)(nil)

// Status is GET /status.
func (n *Node) Status() any {
	st := n.state.Load()
	out := map[string]any{
		"node":        st.cfg.Node,
		"config":      st.cfg.Path,
		"started":     n.started,
		"uptime":      time.Since(n.started).Round(time.Second).String(),
		"listen":      listenView(n.Addrs()),
		"spki_sha256": n.SPKIHash(),
		"goroutines":  runtime.NumGoroutine(),
		"load":        loadView(n.sampler.Latest()),
	}
	if r := n.reloads.latest(); !r.At.IsZero() {
		out["last_reload"] = r // absent until the first reload
	}
	return out
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

func listenView(a Addrs) map[string]string {
	out := map[string]string{"admin": a.Admin}
	for k, v := range map[string]string{"https": a.HTTPS, "http": a.HTTP, "dns": a.DNS} {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// loadView is the node's latest one-second sample, its services' detail
// left to GET /services.
func loadView(s telemetry.NodeSample) map[string]any {
	return map[string]any{
		"time": s.Time, "window_seconds": s.Window.Seconds(), "rps": s.RPS,
		"in_flight": s.InFlight, "cpu_cores": s.CPU, "mem_bytes": s.MemBytes,
	}
}
