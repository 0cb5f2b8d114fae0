package telemetry

import "time"

// NodeSample is one node's figures over the last sampling window. The edge
// node produces one per tick; the mesh gossips it, the policies read it and
// the shipper sends it to the aggregator.
type NodeSample struct {
	Node     string                   `json:"node"`
	Region   string                   `json:"region"`
	Time     time.Time                `json:"time"`
	Window   time.Duration            `json:"window"`
	RPS      float64                  `json:"rps"`
	InFlight int64                    `json:"in_flight"`
	CPU      float64                  `json:"cpu"`       // cores busy, 1.0 = one core
	MemBytes uint64                   `json:"mem_bytes"` // resident set
	Services map[string]ServiceSample `json:"services,omitempty"`
	// Status counts every response the node gave in the window by class,
	// those that reached no service too (no route, a malformed request).
	Status StatusClasses `json:"status,omitzero"`
}

// StatusClasses counts responses by status class: [0] holds the 1xx, [2]
// the 3xx (the redirects, geo steering's among them), [4] the 5xx.
type StatusClasses [5]uint64

// ClassOf is the index of status's class in StatusClasses, or -1 for a
// status outside 100..599.
func ClassOf(status int) int {
	if status < 100 || status > 599 {
		return -1
	}
	return status/100 - 1
}

// Add sums o into c.
func (c *StatusClasses) Add(o StatusClasses) {
	for i, n := range o {
		c[i] += n
	}
}

// Served is the responses that were not redirects: the work a node did
// rather than sent elsewhere.
func (c StatusClasses) Served() uint64 { return c[0] + c[1] + c[3] + c[4] }

// ServiceSample is one service's figures over the window.
type ServiceSample struct {
	RPS             float64           `json:"rps"`
	ErrorRate       float64           `json:"error_rate"` // share of responses that were 5xx or failed
	InFlight        int64             `json:"in_flight"`
	Queued          int64             `json:"queued"`
	Latency         HistogramSnapshot `json:"latency"` // observations in the window only
	Backends        int               `json:"backends"`
	HealthyBackends int               `json:"healthy_backends"`
	// Overflow counts the requests the service's circuit breakers refused
	// in the window, by the threshold that refused them (max_requests,
	// max_pending, max_retries, max_requests_per_backend); nil when none.
	Overflow map[string]uint64 `json:"overflow,omitempty"`
	// Status counts the service's responses in the window by class.
	Status StatusClasses `json:"status,omitzero"`
}

// MergeServices sums per-service figures over several samples, as a region
// view does: rates and counts add, histograms merge exactly, and the error
// rate is re-weighted by each sample's request rate.
func MergeServices(samples []NodeSample) map[string]ServiceSample {
	out := map[string]ServiceSample{}
	errs := map[string]float64{}
	for _, n := range samples {
		for name, s := range n.Services {
			m := out[name]
			m.RPS += s.RPS
			m.InFlight += s.InFlight
			m.Queued += s.Queued
			m.Backends += s.Backends
			m.HealthyBackends += s.HealthyBackends
			m.Latency.Merge(s.Latency)
			for reason, c := range s.Overflow {
				if m.Overflow == nil {
					m.Overflow = map[string]uint64{}
				}
				m.Overflow[reason] += c
			}
			m.Status.Add(s.Status)
			errs[name] += s.ErrorRate * s.RPS
			out[name] = m
		}
	}
	for name, m := range out {
		if m.RPS > 0 {
			m.ErrorRate = errs[name] / m.RPS
			out[name] = m
		}
	}
	return out
}
