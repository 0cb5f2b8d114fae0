package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"perigee/edge/upstream"
	"perigee/telemetry"
)

// Sampler cuts the node's cumulative counters into windows: each call to
// Sample returns the figures since the previous call.
type Sampler struct {
	m                *Metrics
	node, region     string
	services         func() []*upstream.Service
	mu               sync.Mutex
	last             time.Time
	lastCPU          time.Duration
	prev             map[string]serviceTotals
	prevNodeRequests uint64
	prevNodeClasses  telemetry.StatusClasses
	latest           telemetry.NodeSample
}

type serviceTotals struct {
	requests, errors uint64
	latency          telemetry.HistogramSnapshot
	overflow         map[string]uint64 // the breakers' refusals by reason, since they were made
	classes          telemetry.StatusClasses
}

// classCounter counts responses by status class since the process started.
type classCounter [len(telemetry.StatusClasses{})]atomic.Uint64

func (c *classCounter) count(status int) {
	if i := telemetry.ClassOf(status); i >= 0 {
		c[i].Add(1)
	}
}

func (c *classCounter) load() telemetry.StatusClasses {
	var out telemetry.StatusClasses
	for i := range c {
		out[i] = c[i].Load()
	}
	return out
}

// windowClasses is what was counted since prev. The counters live as long
// as the process, so they only grow.
func windowClasses(cur, prev telemetry.StatusClasses) telemetry.StatusClasses {
	for i := range cur {
		cur[i] -= min(cur[i], prev[i])
	}
	return cur
}

// NewSampler starts the first window now.
func (m *Metrics) NewSampler(node, region string, services func() []*upstream.Service) *Sampler {
	s := &Sampler{m: m, node: node, region: region, services: services, prev: map[string]serviceTotals{}}
	s.Sample(time.Now())
	return s
}

// Sample returns the window that ends at now and starts the next.
func (s *Sampler) Sample(now time.Time) telemetry.NodeSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	window := now.Sub(s.last)
	out := telemetry.NodeSample{
		Node: s.node, Region: s.region, Time: now, Window: window,
		InFlight: s.m.nodeIn.Load(), Services: map[string]telemetry.ServiceSample{},
	}
	if u, err := telemetry.ReadProcessUsage(); err == nil {
		if !s.last.IsZero() && window > 0 {
			out.CPU = float64(u.CPU-s.lastCPU) / float64(window)
		}
		out.MemBytes = u.RSSBytes
		s.lastCPU = u.CPU
	}
	secs := window.Seconds()
	var total uint64
	for _, svc := range s.services() {
		st := s.m.Service(svc.Name)
		cur := serviceTotals{requests: st.requests.Load(), errors: st.errors.Load(), latency: st.latency.Snapshot(),
			overflow: svc.CircuitStatus().Overflow, classes: st.classes.load()}
		prev := s.prev[svc.Name]
		reqs, errs := cur.requests-prev.requests, cur.errors-prev.errors
		total += cur.requests
		ss := telemetry.ServiceSample{
			InFlight: st.inFlight.Load(),
			Latency:  cur.latency.Sub(prev.latency),
			Backends: len(svc.Backends()), HealthyBackends: len(svc.Healthy()),
			Overflow: windowOverflow(cur.overflow, prev.overflow),
			Status:   windowClasses(cur.classes, prev.classes),
		}
		if secs > 0 && !s.last.IsZero() {
			ss.RPS = float64(reqs) / secs
		}
		if reqs > 0 {
			ss.ErrorRate = float64(errs) / float64(reqs)
		}
		// Requests in the node but not yet at a backend are queued here.
		var atBackends int64
		for _, b := range svc.Backends() {
			atBackends += b.InFlight()
		}
		ss.Queued = max(0, ss.InFlight-atBackends)
		out.Services[svc.Name] = ss
		s.prev[svc.Name] = cur
	}
	if secs > 0 && !s.last.IsZero() {
		out.RPS = float64(total-min(total, s.prevNodeRequests)) / secs
	}
	s.prevNodeRequests = total
	classes := s.m.classes.load()
	out.Status = windowClasses(classes, s.prevNodeClasses)
	s.prevNodeClasses = classes
	s.last = now
	s.latest = out
	return out
}

// windowOverflow is what the breakers refused since prev, by reason, or nil
// for nothing. A count below prev's is a new breaker (the service was
// dropped and added again), counting from zero.
func windowOverflow(cur, prev map[string]uint64) map[string]uint64 {
	var out map[string]uint64
	for reason, c := range cur {
		if p := prev[reason]; p <= c {
			c -= p
		}
		if c > 0 {
			if out == nil {
				out = map[string]uint64{}
			}
			out[reason] = c
		}
	}
	return out
}

// Latest is the most recent window's sample.
func (s *Sampler) Latest() telemetry.NodeSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest
}

// Run cuts a sample every interval and hands it to each consumer (the mesh,
// the shipper) until ctx is done.
func (s *Sampler) Run(ctx context.Context, interval time.Duration, consumers ...func(telemetry.NodeSample)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			sample := s.Sample(now)
			for _, c := range consumers {
				c(sample)
			}
		}
	}
}
