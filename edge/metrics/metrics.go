// Package metrics records what the node serves, twice over: as Prometheus
// series for scraping, and into the shared telemetry model (mergeable
// histograms, per-service counters) from which the node's load samples are
// cut for the mesh, the policies and the aggregator.
package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"perigee/edge/upstream"
	"perigee/telemetry"
)

// Metrics is the node's registry. Per-service stats live as long as the
// process, so counters survive config reloads.
type Metrics struct {
	Registry *prometheus.Registry

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
	// decisions are the policies' decisions by action and outcome.
	decisions  *prometheus.CounterVec
	retries    *prometheus.CounterVec
	handshakes *prometheus.CounterVec
	h3Conns    prometheus.Counter
	abandoning *prometheus.CounterVec
	h2Errors   *prometheus.CounterVec
	h2Mu       sync.Mutex
	h2Kinds    map[string]bool // the kinds h2Errors has counted, at most maxHTTP2Kinds

	mu       sync.Mutex
	services map[string]*ServiceStats
	nodeIn   atomic.Int64
	classes  classCounter // every response, those of no service too
}

// ServiceStats is one service's counters in the telemetry model.
type ServiceStats struct {
	requests atomic.Uint64
	errors   atomic.Uint64
	inFlight atomic.Int64
	latency  telemetry.Histogram
	classes  classCounter
}

// New registers the node's series; services lists the live services for the
// per-backend gauges, read at scrape time.
func New(services func() []*upstream.Service) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), services: map[string]*ServiceStats{}}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perigee_requests_total", Help: "Requests served, by route, service, status code and protocol (h1, h2, h3).",
	}, []string{"route", "service", "code", "proto"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "perigee_request_duration_seconds", Help: "Time from request to the end of the response, by route.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "service"})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "perigee_in_flight_requests", Help: "Requests being served now."})
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perigee_policy_decisions_total", Help: "Policy decisions, by policy, action (scale, weight, eject, restore, limit, shed, circuit) and outcome (applied, rejected, dry_run, not_applied).",
	}, []string{"policy", "action", "outcome"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perigee_upstream_retries_total", Help: "Requests sent again to another backend after a connect failure, by service.",
	}, []string{"service"})
	m.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perigee_tls_handshakes_total", Help: "TLS handshakes completed, by the protocol negotiated (h1, h2, h3).",
	}, []string{"proto"})
	m.h3Conns = prometheus.NewCounter(prometheus.CounterOpts{Name: "perigee_http3_connections_total", Help: "QUIC connections accepted for HTTP/3."})
	m.abandoning = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perigee_abandoning_connections_closed_total", Help: "Connections closed because their client abandoned half of a run of their requests at once (a rapid reset), by protocol (h2, h3).",
	}, []string{"proto"})
	m.h2Errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perigee_http2_errors_total", Help: "HTTP/2 errors of the listeners' connections and streams, by kind (net/http's: conn or stream, the error code, what went wrong).",
	}, []string{"kind"})
	m.h2Kinds = map[string]bool{}
	m.Registry.MustRegister(m.requests, m.duration, m.inFlight, m.decisions, m.retries, m.handshakes, m.h3Conns, m.abandoning, m.h2Errors, backendCollector{services},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Service returns the stats of a service, creating them on first use.
func (m *Metrics) Service(name string) *ServiceStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.services[name]
	if !ok {
		s = &ServiceStats{}
		m.services[name] = s
	}
	return s
}

// Begin counts a request in flight on s (which may be nil: no route).
func (m *Metrics) Begin(s *ServiceStats) {
	m.nodeIn.Add(1)
	m.inFlight.Inc()
	if s != nil {
		s.inFlight.Add(1)
	}
}

// Done records a finished request that matched no route (s may be nil).
func (m *Metrics) Done(s *ServiceStats, route, service, proto string, status int, took time.Duration) {
	var duration prometheus.Observer
	if s != nil {
		duration = m.duration.WithLabelValues(route, service)
	}
	m.done(s, m.requests.WithLabelValues(route, service, strconv.Itoa(status), protoLabel(proto)), duration, status, took, false)
}

// DoneRoute records a finished request of a route.
//
// A steered request (answered by geo steering, see exchange.Steered) counts
// in the status classes and leaves the in-flight counts, but is not the
// service's load: not in its requests, errors or latency.
func (m *Metrics) DoneRoute(rs *RouteSeries, proto string, status int, took time.Duration, steered bool) {
	m.done(rs.Stats, rs.counter(status, protoLabel(proto)), rs.duration, status, took, steered)
}

func (m *Metrics) done(s *ServiceStats, requests prometheus.Counter, duration prometheus.Observer, status int, took time.Duration, steered bool) {
	// Counted before the request leaves the in-flight gauge, so a sample
	// cut when nothing is in flight holds every class.
	m.classes.count(status)
	if s != nil {
		s.classes.count(status)
	}
	m.nodeIn.Add(-1)
	m.inFlight.Dec()
	requests.Inc()
	if s == nil {
		return
	}
	s.inFlight.Add(-1)
	if steered {
		return
	}
	s.requests.Add(1)
	if status >= 500 {
		s.errors.Add(1)
	}
	s.latency.Observe(took)
	duration.Observe(took.Seconds())
}

// RouteSeries are one route's series, resolved once per config rather than
// looked up by their labels on every request.
type RouteSeries struct {
	Stats          *ServiceStats // the route's service's
	m              *Metrics
	route, service string
	duration       prometheus.Observer
	// codes caches the requests counter's children by status and protocol:
	// a copy-on-write list, read without a lock, of the few a route sees.
	codes atomic.Pointer[[]codeCounter]
	mu    sync.Mutex // adding to codes
}

type codeCounter struct {
	status  int
	proto   string
	counter prometheus.Counter
}

// Route returns the series of a route to service.
func (m *Metrics) Route(route, service string) *RouteSeries {
	return &RouteSeries{Stats: m.Service(service), m: m, route: route, service: service, duration: m.duration.WithLabelValues(route, service)}
}

func (rs *RouteSeries) counter(status int, proto string) prometheus.Counter {
	find := func() prometheus.Counter {
		if list := rs.codes.Load(); list != nil {
			for _, c := range *list {
				if c.status == status && c.proto == proto {
					return c.counter
				}
			}
		}
		return nil
	}
	if c := find(); c != nil {
		return c
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if c := find(); c != nil {
		return c
	}
	c := rs.m.requests.WithLabelValues(rs.route, rs.service, strconv.Itoa(status), proto)
	var list []codeCounter
	if old := rs.codes.Load(); old != nil {
		list = append(list, *old...)
	}
	list = append(list, codeCounter{status, proto, c})
	rs.codes.Store(&list)
	return c
}

// Retried counts the retries one request took.
func (m *Metrics) Retried(service string, n int) {
	if n > 0 {
		m.retries.WithLabelValues(service).Add(float64(n))
	}
}

// Handshake counts a completed TLS handshake by its ALPN protocol.
func (m *Metrics) Handshake(alpn string) {
	label := "other"
	switch alpn {
	case "http/1.1", "":
		label = "h1"
	case "h2", "h3":
		label = alpn
	}
	m.handshakes.WithLabelValues(label).Inc()
}

// HTTP3Conn counts a QUIC connection accepted.
func (m *Metrics) HTTP3Conn() { m.h3Conns.Inc() }

// maxHTTP2Kinds bounds the kinds of HTTP2Error's series. net/http names a
// fixed few dozen; past the bound (a later Go with many more) they count
// as "other" rather than grow the registry.
const maxHTTP2Kinds = 256

// HTTP2Error counts an HTTP/2 error of a listener's connection or stream;
// its shape fits http.HTTP2Config.CountError.
func (m *Metrics) HTTP2Error(kind string) {
	m.h2Mu.Lock()
	if !m.h2Kinds[kind] {
		if len(m.h2Kinds) < maxHTTP2Kinds {
			m.h2Kinds[kind] = true
		} else {
			kind = "other"
		}
	}
	m.h2Mu.Unlock()
	m.h2Errors.WithLabelValues(kind).Inc()
}

// AbandoningClosed counts a connection closed for the requests its client
// abandoned; proto is the request's (r.Proto).
func (m *Metrics) AbandoningClosed(proto string) {
	m.abandoning.WithLabelValues(protoLabel(proto)).Inc()
}

// protoLabel is the short name of an HTTP version, as the series label it.
func protoLabel(proto string) string {
	switch proto {
	case "HTTP/1.1", "HTTP/1.0":
		return "h1"
	case "HTTP/2.0":
		return "h2"
	case "HTTP/3.0":
		return "h3"
	}
	return "other"
}

// InFlight is the number of requests the node is serving now.
func (m *Metrics) InFlight() int64 { return m.nodeIn.Load() }

// backendCollector exports each backend's live state at scrape time, so the
// request path does no work for it.
type backendCollector struct{ services func() []*upstream.Service }

var (
	descHealthy  = prometheus.NewDesc("perigee_upstream_healthy", "1 when the backend takes traffic.", []string{"service", "backend"}, nil)
	descInFlight = prometheus.NewDesc("perigee_upstream_in_flight", "Requests being served by the backend.", []string{"service", "backend"}, nil)
	descLatency  = prometheus.NewDesc("perigee_upstream_ewma_seconds", "Peak-EWMA response time of the backend.", []string{"service", "backend"}, nil)
	descWeight   = prometheus.NewDesc("perigee_upstream_weight", "Current balancing weight of the backend.", []string{"service", "backend"}, nil)
	descCheckUp  = prometheus.NewDesc("perigee_upstream_check_up", "1 when the backend's last active health checks passed (or it has none).", []string{"service", "backend"}, nil)
	descEjected  = prometheus.NewDesc("perigee_upstream_ejected", "1 while passive outlier detection keeps the backend out.", []string{"service", "backend"}, nil)
	descFailures = prometheus.NewDesc("perigee_upstream_failures_total", "Requests to the backend that failed.", []string{"service", "backend"}, nil)
	descOverflow = prometheus.NewDesc("perigee_node_upstream_overflow_total", "Requests a circuit breaker refused, by the threshold that refused them.", []string{"service", "reason"}, nil)
)

func (backendCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHealthy, descInFlight, descLatency, descWeight, descCheckUp, descEjected, descFailures, descOverflow} {
		ch <- d
	}
}

func (c backendCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, s := range c.services() {
		for reason, n := range s.CircuitStatus().Overflow {
			ch <- prometheus.MustNewConstMetric(descOverflow, prometheus.CounterValue, float64(n), s.Name, reason)
		}
		for _, b := range s.Backends() {
			healthy := 0.0
			if b.Healthy(now) {
				healthy = 1
			}
			ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, healthy, s.Name, b.Addr)
			ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(b.InFlight()), s.Name, b.Addr)
			ch <- prometheus.MustNewConstMetric(descLatency, prometheus.GaugeValue, b.Latency().Seconds(), s.Name, b.Addr)
			ch <- prometheus.MustNewConstMetric(descWeight, prometheus.GaugeValue, float64(b.Weight()), s.Name, b.Addr)
			st := b.Status(now)
			ch <- prometheus.MustNewConstMetric(descCheckUp, prometheus.GaugeValue, one(st.CheckUp), s.Name, b.Addr)
			ch <- prometheus.MustNewConstMetric(descEjected, prometheus.GaugeValue, one(st.EjectedUntil.After(now)), s.Name, b.Addr)
			ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(st.Failures), s.Name, b.Addr)
		}
	}
}

func one(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
