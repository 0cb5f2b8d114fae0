package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"perigee/telemetry"
)

// Emit reports one value of a series read at scrape time, with its label
// values in the order the series was declared with.
type Emit func(value float64, labels ...string)

// Gauges registers a gauge family whose values read reports at each
// scrape, so the part that owns the figures does no work between scrapes.
func (m *Metrics) Gauges(name, help string, labels []string, read func(Emit)) {
	m.Registry.MustRegister(funcCollector{prometheus.NewDesc(name, help, labels, nil), prometheus.GaugeValue, read})
}

// Counters is Gauges for figures that only grow (a reset is a restart).
func (m *Metrics) Counters(name, help string, labels []string, read func(Emit)) {
	m.Registry.MustRegister(funcCollector{prometheus.NewDesc(name, help, labels, nil), prometheus.CounterValue, read})
}

type funcCollector struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	read func(Emit)
}

func (c funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c funcCollector) Collect(ch chan<- prometheus.Metric) {
	c.read(func(v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.desc, c.kind, v, labels...)
	})
}

// TransformFigures are one Wasm transform's counters since it was loaded.
type TransformFigures struct {
	Name                                 string
	Calls, Errors, Traps, Timeouts, Busy uint64
	Time                                 telemetry.HistogramSnapshot // in the guest, per request
}

var (
	descTransformCalls  = prometheus.NewDesc("perigee_transform_calls_total", "Requests that entered the Wasm transform.", []string{"transform"}, nil)
	descTransformErrors = prometheus.NewDesc("perigee_transform_errors_total", "Requests the transform failed, by kind: error (a 5xx), trap, timeout, busy (no free instance).", []string{"transform", "kind"}, nil)
	descTransformTime   = prometheus.NewDesc("perigee_transform_guest_seconds", "Time spent inside the guest per request.", []string{"transform"}, nil)
)

// Transforms exports each transform's calls, errors and guest time, read
// at scrape time from read. The time is a summary (p50, p90, p99): the
// node's histograms have their own buckets, exact for merging, and a
// scrape reads their quantiles.
func (m *Metrics) Transforms(read func() []TransformFigures) {
	m.Registry.MustRegister(transformCollector(read))
}

type transformCollector func() []TransformFigures

func (transformCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descTransformCalls
	ch <- descTransformErrors
	ch <- descTransformTime
}

func (read transformCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range read() {
		ch <- prometheus.MustNewConstMetric(descTransformCalls, prometheus.CounterValue, float64(t.Calls), t.Name)
		for kind, n := range map[string]uint64{"error": t.Errors, "trap": t.Traps, "timeout": t.Timeouts, "busy": t.Busy} {
			ch <- prometheus.MustNewConstMetric(descTransformErrors, prometheus.CounterValue, float64(n), t.Name, kind)
		}
		q := map[float64]float64{}
		for _, p := range []float64{0.5, 0.9, 0.99} {
			q[p] = t.Time.Quantile(p).Seconds()
		}
		sum := (time.Duration(t.Time.SumUS) * time.Microsecond).Seconds()
		ch <- prometheus.MustNewConstSummary(descTransformTime, t.Time.Count(), sum, q, t.Name)
	}
}

// Decided counts a policy decision by its action and what became of it:
// applied, rejected (validation refused it), dry_run, or not_applied.
func (m *Metrics) Decided(policy, action string, applied, dryRun bool, rejected string) {
	outcome := "not_applied"
	switch {
	case applied:
		outcome = "applied"
	case rejected != "":
		outcome = "rejected"
	case dryRun:
		outcome = "dry_run"
	}
	m.decisions.WithLabelValues(policy, action, outcome).Inc()
}
