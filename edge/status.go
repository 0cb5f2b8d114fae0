package edge

import (
	"runtime"
	"time"

	"perigee/edge/admin"
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
// latency.
func (n *Node) Services() any {
	now := time.Now()
	type backend struct {
		URL            string    `json:"url"`
		Healthy        bool      `json:"healthy"`
		CheckUp        bool      `json:"check_up"`
		EjectedUntil   time.Time `json:"ejected_until,omitzero"`
		Weight         int       `json:"weight"`
		InFlight       int64     `json:"in_flight"`
		LatencySeconds float64   `json:"ewma_latency_seconds"`
		Requests       uint64    `json:"requests"`
		Failures       uint64    `json:"failures"`
	}
	type service struct {
		Name     string    `json:"name"`
		Balancer string    `json:"balancer"`
		Healthy  int       `json:"healthy"`
		Backends []backend `json:"backends"`
	}
	st := n.state.Load()
	out := make([]service, 0, len(st.list))
	for _, s := range st.list {
		v := service{Name: s.Name, Balancer: st.cfg.Services[s.Name].Balancer, Healthy: len(s.Healthy())}
		for _, b := range s.Backends() {
			bs := b.Status(now)
			v.Backends = append(v.Backends, backend{bs.URL, bs.Healthy, bs.CheckUp, bs.EjectedUntil, bs.Weight, bs.InFlight, bs.Latency.Seconds(), bs.Requests, bs.Failures})
		}
		out = append(out, v)
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
