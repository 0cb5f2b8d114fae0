package wasm

import (
	"context"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero/api"
)

// maxGuestMetrics bounds the series proxy-wasm filters may define on a
// node, all transforms together; one transform may define a filterShare
// of them, so that it cannot leave the others none.
const maxGuestMetrics = 1024

// proxy_metric_type_t.
const (
	metricCounter   = 0
	metricGauge     = 1
	metricHistogram = 2
)

// guestMetrics are the metrics proxy-wasm filters define, exported as
// Prometheus series perigee_wasm_<name>{transform="..."}. Each instance of
// a transform that defines a name gets the same series, as Envoy's workers
// share one stat.
type guestMetrics struct {
	mu     sync.Mutex
	byKey  map[string]uint32 // transform NUL name
	byID   []*guestMetric
	kindOf map[string]uint32 // a name has one type across transforms
	count  map[string]int    // the series each transform defined
}

type guestMetric struct {
	kind      uint32
	name      string
	transform string
	value     int64 // counter and gauge, under guestMetrics.mu
	hist      prometheus.Histogram
}

func newGuestMetrics() *guestMetrics {
	return &guestMetrics{byKey: map[string]uint32{}, kindOf: map[string]uint32{}, count: map[string]int{}}
}

// promName makes a guest's metric name a valid Prometheus name.
func promName(name string) string {
	var b strings.Builder
	b.WriteString("perigee_wasm_")
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == ':':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

func (m *guestMetrics) define(transform string, kind uint32, name string) (uint32, uint64) {
	if kind > metricHistogram || name == "" {
		return 0, statusBadArgument
	}
	name = promName(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if k, ok := m.kindOf[name]; (ok && k != kind) || m.collides(name, kind) {
		return 0, statusBadArgument
	}
	key := transform + "\x00" + name
	if id, ok := m.byKey[key]; ok {
		return id, statusOK
	}
	if len(m.byID) >= maxGuestMetrics || m.count[transform] >= maxGuestMetrics/filterShare {
		return 0, statusInternalFailure
	}
	g := &guestMetric{kind: kind, name: name, transform: transform}
	if kind == metricHistogram {
		g.hist = prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: name, Help: "Defined by a proxy-wasm filter.",
			ConstLabels: prometheus.Labels{"transform": transform},
			Buckets:     prometheus.ExponentialBuckets(1, 4, 12),
		})
	}
	m.byID = append(m.byID, g)
	id := uint32(len(m.byID)) // ids start at 1: 0 is no metric
	m.byKey[key], m.kindOf[name] = id, kind
	m.count[transform]++
	return id, statusOK
}

// histogramSeries are the suffixes of a histogram's series names.
var histogramSeries = [...]string{"_bucket", "_sum", "_count"}

// collides tells whether a metric name of kind would share a series name
// with a histogram's (h_count is h's), which fails the registry's Gather
// and so the node's whole /metrics. Call with m.mu held.
func (m *guestMetrics) collides(name string, kind uint32) bool {
	for _, suffix := range histogramSeries {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if k, ok := m.kindOf[base]; ok && k == metricHistogram {
				return true
			}
		}
		if _, ok := m.kindOf[name+suffix]; ok && kind == metricHistogram {
			return true
		}
	}
	return false
}

func (m *guestMetrics) get(id uint32) *guestMetric {
	if id == 0 || int(id) > len(m.byID) {
		return nil
	}
	return m.byID[id-1]
}

// Describe sends nothing: the series appear as filters define them, which
// makes this an unchecked collector.
func (m *guestMetrics) Describe(chan<- *prometheus.Desc) {}

func (m *guestMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range m.byID {
		labels := prometheus.Labels{"transform": g.transform}
		switch g.kind {
		case metricCounter:
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "Defined by a proxy-wasm filter.", nil, labels), prometheus.CounterValue, float64(g.value))
		case metricGauge:
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "Defined by a proxy-wasm filter.", nil, labels), prometheus.GaugeValue, float64(g.value))
		case metricHistogram:
			g.hist.Collect(ch)
		}
	}
}

func (p proxyABI) defineMetric(_ context.Context, mod api.Module, stack []uint64) {
	if uint32(stack[2]) > maxGuestName {
		stack[0] = statusBadArgument
		return
	}
	name, ok := readString(mod, stack[1], stack[2])
	if !ok || p.t == nil {
		stack[0] = statusInvalidMemory
		return
	}
	id, status := p.t.host.metrics.define(p.t.spec.Name, uint32(stack[0]), name)
	if status == statusOK && !mod.Memory().WriteUint32Le(uint32(stack[3]), id) {
		status = statusInvalidMemory
	}
	stack[0] = status
}

// incrementMetric adds to a counter (never below zero) or a gauge.
func (p proxyABI) incrementMetric(_ context.Context, _ api.Module, stack []uint64) {
	p.changeMetric(uint32(stack[0]), int64(stack[1]), stack)
}

// recordMetric sets a gauge, adds to a counter, observes a histogram, as
// Envoy does.
func (p proxyABI) recordMetric(_ context.Context, _ api.Module, stack []uint64) {
	id, value := uint32(stack[0]), stack[1]
	if p.t == nil {
		stack[0] = statusNotFound
		return
	}
	m := p.t.host.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.get(id)
	stack[0] = statusOK
	switch {
	case g == nil:
		stack[0] = statusNotFound
	case g.kind == metricHistogram:
		g.hist.Observe(float64(value))
	case g.kind == metricGauge:
		g.value = int64(value)
	default:
		g.value += int64(value)
	}
}

func (p proxyABI) changeMetric(id uint32, delta int64, stack []uint64) {
	if p.t == nil {
		stack[0] = statusNotFound
		return
	}
	m := p.t.host.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.get(id)
	switch {
	case g == nil:
		stack[0] = statusNotFound
	case g.kind == metricHistogram || (g.kind == metricCounter && delta < 0):
		stack[0] = statusBadArgument
	default:
		g.value += delta
		stack[0] = statusOK
	}
}

func (p proxyABI) getMetric(_ context.Context, mod api.Module, stack []uint64) {
	if p.t == nil {
		stack[0] = statusNotFound
		return
	}
	m := p.t.host.metrics
	m.mu.Lock()
	g := m.get(uint32(stack[0]))
	var v int64
	if g != nil {
		v = g.value
	}
	m.mu.Unlock()
	switch {
	case g == nil:
		stack[0] = statusNotFound
	case g.kind == metricHistogram:
		stack[0] = statusBadArgument
	case !mod.Memory().WriteUint64Le(uint32(stack[1]), uint64(v)):
		stack[0] = statusInvalidMemory
	default:
		stack[0] = statusOK
	}
}
