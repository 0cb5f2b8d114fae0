package aggregator

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"perigee/connlimit"
)

type metrics struct {
	batches     *prometheus.CounterVec
	records     prometheus.Counter
	bytesIn     prometheus.Counter
	rawBytes    prometheus.Counter
	remoteWrite *prometheus.CounterVec
	export      *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, s *server, limits []*connlimit.Limiter) *metrics {
	m := &metrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perigee_aggregator_batches_total", Help: "Batches received, by result (stored, duplicate or why refused).",
		}, []string{"result"}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "perigee_aggregator_records_total", Help: "Records in stored batches.",
		}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "perigee_aggregator_received_bytes_total", Help: "Compressed batch bytes received.",
		}),
		rawBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "perigee_aggregator_decompressed_bytes_total", Help: "Decompressed bytes of stored batches.",
		}),
		remoteWrite: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perigee_aggregator_remote_write_total", Help: "Remote-write pushes, by result.",
		}, []string{"result"}),
	}
	m.export = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perigee_aggregator_export_total", Help: "Batches exported to the storage engine (ok), and failed pushes (error).",
	}, []string{"result"})
	damaged := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "perigee_aggregator_store_damaged_bytes", Help: "Damaged bytes store scans have skipped since start (files are kept as found).",
	}, func() float64 { return float64(s.store.Damage().Bytes) })
	storeBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "perigee_aggregator_store_bytes", Help: "Bytes of the store's segment files; at max_store_bytes new batches get 507.",
	}, func() float64 { return float64(s.store.Bytes()) })
	storeMax := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "perigee_aggregator_store_max_bytes", Help: "max_store_bytes: the bound on perigee_aggregator_store_bytes.",
	}, func() float64 { return float64(s.cfg.MaxStoreBytes) })
	caughtUp := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "perigee_aggregator_export_caught_up_timestamp_seconds", Help: "When the export last had every stored batch pushed (0: not yet since start).",
	}, func() float64 { return float64(s.exportCaughtUp.Load()) / 1000 })
	reg.MustRegister(m.batches, m.records, m.bytesIn, m.rawBytes, m.remoteWrite, m.export, damaged, storeBytes, storeMax, caughtUp, fleetCollector{s}, connCollector(limits))
	return m
}

var (
	connsOpen = prometheus.NewDesc("perigee_aggregator_connections_open",
		"Connections a listener holds (https, http3), within connections.", []string{"listener"}, nil)
	connsRefused = prometheus.NewDesc("perigee_aggregator_connections_refused_total",
		"Connections a listener refused at once, by the bound that refused them (max_total, max_per_address). A QUIC client's Initial sent again before the refusal reached it counts again.",
		[]string{"listener", "reason"}, nil)
)

// connCollector reads the listeners' limiters at scrape time.
type connCollector []*connlimit.Limiter

func (c connCollector) Describe(ch chan<- *prometheus.Desc) { ch <- connsOpen; ch <- connsRefused }

func (c connCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c {
		st := l.Stats()
		ch <- prometheus.MustNewConstMetric(connsOpen, prometheus.GaugeValue, float64(st.Open), st.Name)
		ch <- prometheus.MustNewConstMetric(connsRefused, prometheus.CounterValue, float64(st.RefusedTotal), st.Name, "max_total")
		ch <- prometheus.MustNewConstMetric(connsRefused, prometheus.CounterValue, float64(st.RefusedPerAddress), st.Name, "max_per_address")
	}
}

// figure is one fleet-wide value, shared by /metrics and remote-write so
// both say the same thing.
type figure struct {
	name, help string
	labels     []string // name, value pairs
	value      float64
	counter    bool // cumulative since the node started; otherwise a gauge
}

func fleetFigures(v FleetView) []figure {
	var out []figure
	add := func(name, help string, value float64, labels ...string) {
		out = append(out, figure{name: name, help: help, labels: labels, value: value})
	}
	addCounter := func(name, help string, value float64, labels ...string) {
		out = append(out, figure{name: name, help: help, labels: labels, value: value, counter: true})
	}
	byStatus := map[string]float64{"up": 0, "stale": 0, "down": 0}
	var rps float64
	var classes *ClassRates // of the nodes up whose samples carry them
	for _, n := range v.Nodes {
		byStatus[n.Status]++
		up := 0.0
		if n.Status == "up" {
			up = 1
			rps += n.RPS
			if n.StatusRPS != nil {
				if classes == nil {
					classes = &ClassRates{}
				}
				for i, r := range n.StatusRPS {
					classes[i] += r
				}
			}
		}
		for i, r := range n.StatusRPS.orNone() {
			add("perigee_node_responses_per_second", "Responses per second in the node's last sample, by status class (3xx: redirects, not load).", r, "node", n.Node, "region", n.Region, "class", className(i))
		}
		add("perigee_node_up", "1 if the node's last batch is recent.", up, "node", n.Node, "region", n.Region)
		add("perigee_node_rps", "Requests per second in the node's last sample.", n.RPS, "node", n.Node, "region", n.Region)
		add("perigee_node_cpu_cores", "Cores busy in the node's last sample.", n.CPU, "node", n.Node, "region", n.Region)
		add("perigee_node_telemetry_bytes_per_second", "What shipping telemetry costs the node, on the wire.", n.TelemetryBytesPerSec, "node", n.Node, "region", n.Region)
		add("perigee_node_clock_skew_seconds", "How far ahead of the aggregator the node's clock was at its last batch; beyond max_skew its batches are re-stamped.", n.ClockSkewSeconds, "node", n.Node, "region", n.Region)
		addCounter("perigee_node_telemetry_encode_cpu_seconds_total", "CPU the node spent encoding telemetry since it started.", n.Telemetry.EncodeCPU.Seconds(), "node", n.Node, "region", n.Region)
	}
	for _, st := range []string{"up", "stale", "down"} {
		add("perigee_fleet_nodes", "Nodes known to the aggregator, by health.", byStatus[st], "status", st)
	}
	add("perigee_fleet_rps", "Requests per second across nodes that are up.", rps)
	for i, r := range classes.orNone() {
		add("perigee_fleet_responses_per_second", "Responses per second across nodes that are up, by status class.", r, "class", className(i))
	}
	for _, r := range v.Regions {
		add("perigee_region_rps", "Requests per second across the region's nodes that are up.", r.RPS, "region", r.Name)
		add("perigee_region_p99_seconds", "p99 latency over the region's merged histograms.", r.P99MS/1000, "region", r.Name)
		add("perigee_region_error_ratio", "Share of failed responses in the region.", r.ErrPct/100, "region", r.Name)
	}
	return out
}

// fleetCollector computes the fleet figures at scrape time.
type fleetCollector struct{ s *server }

func (fleetCollector) Describe(chan<- *prometheus.Desc) {} // unchecked: the label sets vary

func (c fleetCollector) Collect(ch chan<- prometheus.Metric) {
	for _, f := range fleetFigures(c.s.fleet.view(time.Now(), c.s.places, c.s.dedup)) {
		var names, values []string
		for i := 0; i+1 < len(f.labels); i += 2 {
			names = append(names, f.labels[i])
			values = append(values, f.labels[i+1])
		}
		kind := prometheus.GaugeValue
		if f.counter {
			kind = prometheus.CounterValue
		}
		m, err := prometheus.NewConstMetric(prometheus.NewDesc(f.name, f.help, names, nil), kind, f.value, values...)
		if err != nil {
			// A label value a node sent that Prometheus cannot carry
			// (not UTF-8): leave the series out rather than fail the scrape.
			continue
		}
		ch <- m
	}
}

// orNone is the rates, or none to range over when there are none.
func (c *ClassRates) orNone() []float64 {
	if c == nil {
		return nil
	}
	return c[:]
}

// className is the label of class index i: "1xx" to "5xx".
func className(i int) string { return strconv.Itoa(i+1) + "xx" }
