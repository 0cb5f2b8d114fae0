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
	StartFailures                        uint64                      // instance starts that failed or overran init_timeout
	Time                                 telemetry.HistogramSnapshot // in the guest, per request
}

var (
	descTransformCalls  = prometheus.NewDesc("perigee_transform_calls_total", "Requests that entered the Wasm transform.", []string{"transform"}, nil)
	descTransformErrors = prometheus.NewDesc("perigee_transform_errors_total", "Requests the transform failed, by kind: error (a 5xx), trap, timeout, busy (no free instance).", []string{"transform", "kind"}, nil)
	descTransformTime   = prometheus.NewDesc("perigee_transform_guest_seconds", "Time spent inside the guest per request.", []string{"transform"}, nil)
	descTransformStarts = prometheus.NewDesc("perigee_transform_start_failures_total", "Instance starts that failed or overran init_timeout (at load, growing the pool, replacing an instance).", []string{"transform"}, nil)
)

// Transforms exports each transform's calls, errors and guest time, read
// at scrape time from read.
func (m *Metrics) Transforms(read func() []TransformFigures) {
	m.Registry.MustRegister(transformCollector(read))
}

type transformCollector func() []TransformFigures

func (transformCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descTransformCalls
	ch <- descTransformErrors
	ch <- descTransformTime
	ch <- descTransformStarts
}

func (read transformCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range read() {
		ch <- prometheus.MustNewConstMetric(descTransformCalls, prometheus.CounterValue, float64(t.Calls), t.Name)
		for kind, n := range map[string]uint64{"error": t.Errors, "trap": t.Traps, "timeout": t.Timeouts, "busy": t.Busy} {
			ch <- prometheus.MustNewConstMetric(descTransformErrors, prometheus.CounterValue, float64(n), t.Name, kind)
		}
		ch <- prometheus.MustNewConstMetric(descTransformStarts, prometheus.CounterValue, float64(t.StartFailures), t.Name)
		sum := (time.Duration(t.Time.SumUS) * time.Microsecond).Seconds()
		ch <- prometheus.MustNewConstHistogram(descTransformTime, t.Time.Count(), sum, guestBuckets(t.Time), t.Name)
	}
}

// guestBounds are the le of the guest-time histogram: powers of two from
// 16µs to about 1s. Each is a bound of the node's own log-linear buckets,
// so every count is exact rather than split from a bucket that straddles
// it, and 17 of them keep a transform's series few.
var guestBounds = func() []time.Duration {
	var out []time.Duration
	for us := 16; us <= 1<<20; us *= 2 {
		out = append(out, time.Duration(us)*time.Microsecond)
	}
	return out
}()

// guestBuckets folds a snapshot into guestBounds' cumulative counts: le
// counts the buckets whose upper bound is at most le.
func guestBuckets(s telemetry.HistogramSnapshot) map[float64]uint64 {
	out := make(map[float64]uint64, len(guestBounds))
	var cum uint64
	j := 0
	for i, c := range s.Counts {
		for up := telemetry.BucketUpper(i); j < len(guestBounds) && up > guestBounds[j]; j++ {
			out[guestBounds[j].Seconds()] = cum
		}
		cum += c
	}
	for ; j < len(guestBounds); j++ {
		out[guestBounds[j].Seconds()] = cum
	}
	return out
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

// LogDropped counts, at scrape time, the lines a log dropped because its
// reader was not keeping up (see logsink); name is "access" or "node".
func (m *Metrics) LogDropped(name string, read func() uint64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "perigee_log_dropped_total", Help: "Log lines dropped because the log's reader was not keeping up, by log (access, node).",
		ConstLabels: prometheus.Labels{"log": name},
	}, func() float64 { return float64(read()) }))
}
