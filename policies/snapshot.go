// Package policies runs scaling policies written in Lua: every interval a
// policy sees a snapshot of what the gateway measures, its decisions are
// checked against the service's bounds, applied (node-local actions on every
// node, scale only on the region leader) and recorded.
package policies

import (
	"time"

	"perigee/telemetry"
)

// Snapshot is what a policy sees in one evaluation.
type Snapshot struct {
	Time     time.Time
	Node     NodeFigures
	Services map[string]ServiceFigures // this node's view
	Region   map[string]ServiceFigures // summed over the region; nil means this node alone
}

// NodeFigures describe the node itself.
type NodeFigures struct {
	CPU      float64 // cores busy
	MemBytes uint64
	InFlight int64
}

// ServiceFigures describe one service over the last sampling window.
type ServiceFigures struct {
	RPS       float64
	ErrorRate float64 // share of responses that failed
	P50       time.Duration
	P95       time.Duration
	P99       time.Duration
	EWMA      time.Duration
	InFlight  int64
	Queued    int64
	Replicas  Replicas
	Backends  []BackendFigures
}

// Replicas is a service's replica count as its actuator reports it. The
// engine fills it in from the actuator and bounds when the source leaves it
// zero.
type Replicas struct {
	Current, Desired, Min, Max int
}

// BackendFigures describe one backend of a service.
type BackendFigures struct {
	Address   string
	Healthy   bool
	Weight    int
	InFlight  int64
	Latency   time.Duration // EWMA of its response time
	ErrorRate float64
}

// Source produces snapshots; the edge node implements it.
type Source interface {
	Snapshot() Snapshot
}

// Target applies node-local actions; the edge node implements it.
type Target interface {
	SetWeight(service, backend string, w int) error
	Eject(service, backend string, d time.Duration) error
	Restore(service, backend string) error
	// SetLimit installs a token bucket on the route; rps 0 removes it.
	SetLimit(route string, rps float64, burst int) error
	// SetShed rejects that share of the route's low-priority requests with
	// 503 and Retry-After; 0 stops shedding.
	SetShed(route string, fraction float64) error
}

// FiguresFrom turns a telemetry sample into service figures, reading the
// percentiles from its mergeable histogram; ewma is the service's decaying
// average latency, which the sample does not carry.
func FiguresFrom(s telemetry.ServiceSample, ewma time.Duration) ServiceFigures {
	return ServiceFigures{
		RPS:       s.RPS,
		ErrorRate: s.ErrorRate,
		P50:       s.Latency.Quantile(0.50),
		P95:       s.Latency.Quantile(0.95),
		P99:       s.Latency.Quantile(0.99),
		EWMA:      ewma,
		InFlight:  s.InFlight,
		Queued:    s.Queued,
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// luaServices renders figures as the table a script reads, keeping only the
// services in allow when it is non-empty.
func luaServices(in map[string]ServiceFigures, allow map[string]bool) map[string]any {
	out := make(map[string]any, len(in))
	for name, f := range in {
		if len(allow) > 0 && !allow[name] {
			continue
		}
		backends := make([]any, len(f.Backends))
		for i, b := range f.Backends {
			backends[i] = map[string]any{
				"address": b.Address, "healthy": b.Healthy, "weight": b.Weight,
				"in_flight": b.InFlight, "latency_ms": ms(b.Latency), "error_rate": b.ErrorRate,
			}
		}
		out[name] = map[string]any{
			"rps": f.RPS, "error_rate": f.ErrorRate,
			"p50_ms": ms(f.P50), "p95_ms": ms(f.P95), "p99_ms": ms(f.P99), "ewma_ms": ms(f.EWMA),
			"in_flight": f.InFlight, "queued": f.Queued,
			"replicas": map[string]any{
				"current": f.Replicas.Current, "desired": f.Replicas.Desired,
				"min": f.Replicas.Min, "max": f.Replicas.Max,
			},
			"backends": backends,
		}
	}
	return out
}
