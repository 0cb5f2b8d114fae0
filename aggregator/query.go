package aggregator

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// Health thresholds: a node whose last batch is older than staleAfter is
// "stale", older than downAfter "down".
const (
	staleAfter = 30 * time.Second
	downAfter  = 2 * time.Minute
)

// NodeView is one node in the fleet answer.
type NodeView struct {
	Node      string    `json:"node"`
	Region    string    `json:"region"`
	Status    string    `json:"status"` // up, stale, down
	LastSeen  time.Time `json:"last_seen"`
	SampledAt time.Time `json:"sampled_at"`
	RPS       float64   `json:"rps"`
	CPU       float64   `json:"cpu"`
	MemBytes  uint64    `json:"mem_bytes"`
	InFlight  int64     `json:"in_flight"`
	ErrorRate float64   `json:"error_rate"`
	P50MS     float64   `json:"p50_ms"`
	P99MS     float64   `json:"p99_ms"`
	Healthy   int       `json:"healthy_backends"`
	Backends  int       `json:"backends"`
	Batches   int       `json:"batches"`
	Access    uint64    `json:"access_records"`
	// ClockSkewSeconds is how far ahead of the aggregator the node's clock
	// was at its last batch (negative: behind). Batches more than max_skew
	// ahead are re-stamped by it.
	ClockSkewSeconds float64 `json:"clock_skew_seconds"`
	// Telemetry is the node's own shipping cost.
	Telemetry            wire.Cost `json:"telemetry"`
	TelemetryBytesPerSec float64   `json:"telemetry_bytes_per_sec"`
	// CircuitOverflow is what the node's circuit breakers refused over the
	// samples the view holds (the last memory_window), by service and
	// reason; empty when they refused nothing.
	CircuitOverflow []Overflow `json:"circuit_overflow,omitempty"`
	// StatusRPS is the node's responses per second by status class in its
	// last sample, every response counted (redirects, and those that
	// reached no service); absent when the sample carries no classes.
	StatusRPS *ClassRates `json:"status_rps,omitempty"`
}

// ClassRates are responses per second by status class, [0] the 1xx to [4]
// the 5xx; in JSON an object {"1xx": ..., "5xx": ...}.
type ClassRates [len(telemetry.StatusClasses{})]float64

// classRatesJSON is ClassRates as JSON spells it.
type classRatesJSON struct {
	C1 float64 `json:"1xx"`
	C2 float64 `json:"2xx"`
	C3 float64 `json:"3xx"`
	C4 float64 `json:"4xx"`
	C5 float64 `json:"5xx"`
}

func (c ClassRates) MarshalJSON() ([]byte, error) {
	return json.Marshal(classRatesJSON{c[0], c[1], c[2], c[3], c[4]})
}

func (c *ClassRates) UnmarshalJSON(b []byte) error {
	var j classRatesJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*c = ClassRates{j.C1, j.C2, j.C3, j.C4, j.C5}
	return nil
}

// statusOf is p's rates, or nil when its sample carried none.
func statusOf(p point) *ClassRates {
	if !p.HasStatus {
		return nil
	}
	return &p.Status
}

// Overflow is a count of requests one service's circuit breaker refused
// past one threshold (max_requests, max_pending, max_retries,
// max_requests_per_backend).
type Overflow struct {
	Service string `json:"service"`
	Reason  string `json:"reason"`
	Count   uint64 `json:"count"`
}

// RegionView sums a region's nodes.
type RegionView struct {
	Name   string  `json:"name"`
	Coord  *Coord  `json:"coord,omitempty"` // nil when the region's place is unknown
	Nodes  int     `json:"nodes"`
	Up     int     `json:"up"`
	RPS    float64 `json:"rps"`
	P99MS  float64 `json:"p99_ms"`
	ErrPct float64 `json:"error_pct"`
}

// FleetView is the answer to /v1/fleet.
type FleetView struct {
	Time    time.Time    `json:"time"`
	Nodes   []NodeView   `json:"nodes"`
	Regions []RegionView `json:"regions"`
	Batches uint64       `json:"batches"`
	Records uint64       `json:"records"`
	// Warming is true after a start until the view holds the store's last
	// memory_window: until then nodes, series and decisions show less.
	Warming bool `json:"warming,omitempty"`
}

// SeriesPoint is one step of a series; rates and CPU add across nodes and
// latency quantiles come from exactly merged histograms.
type SeriesPoint struct {
	T         time.Time `json:"t"`
	RPS       float64   `json:"rps"`
	CPU       float64   `json:"cpu"`
	ErrorRate float64   `json:"error_rate"`
	P50MS     float64   `json:"p50_ms"`
	P99MS     float64   `json:"p99_ms"`
	Nodes     int       `json:"nodes"`
	// StatusRPS sums the nodes' responses per second by status class, of
	// the nodes whose samples carry them; absent when none did (and from
	// the rollup tiers, which keep no classes).
	StatusRPS *ClassRates `json:"status_rps,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func status(lastSeen, now time.Time) string {
	switch age := now.Sub(lastSeen); {
	case age > downAfter:
		return "down"
	case age > staleAfter:
		return "stale"
	}
	return "up"
}

func (f *fleet) view(now time.Time, places map[string]Coord, d *dedup) FleetView {
	v := FleetView{Time: now, Nodes: []NodeView{}, Regions: []RegionView{}}
	v.Batches, v.Records = d.totals()
	f.mu.RLock()
	defer f.mu.RUnlock()
	regions := map[string]*RegionView{}
	regionLat := map[string]*telemetry.HistogramSnapshot{}
	for name, n := range f.nodes {
		batches, _, ok := d.counts(name)
		if !ok {
			continue // only ever reserved, never stored
		}
		p := n.last
		var lat telemetry.HistogramSnapshot
		p.Latency.addTo(&lat)
		nv := NodeView{
			Node: name, Region: n.region, Status: status(n.lastSeen, now), LastSeen: n.lastSeen, SampledAt: p.T,
			RPS: p.RPS, CPU: p.CPU, MemBytes: p.Mem, InFlight: p.InFlight, ErrorRate: p.ErrRate,
			P50MS: ms(lat.Quantile(0.5)), P99MS: ms(lat.Quantile(0.99)),
			Healthy: p.Healthy, Backends: p.Backends, Batches: int(batches), Access: n.access,
			Telemetry: n.cost, TelemetryBytesPerSec: n.costRate, ClockSkewSeconds: n.skew.Seconds(),
			CircuitOverflow: n.overflow(), StatusRPS: statusOf(p),
		}
		v.Nodes = append(v.Nodes, nv)
		r := regions[n.region]
		if r == nil {
			r = &RegionView{Name: n.region}
			if c, ok := places[n.region]; ok {
				r.Coord = &c
			}
			regions[n.region] = r
			regionLat[n.region] = &telemetry.HistogramSnapshot{}
		}
		r.Nodes++
		if nv.Status == "up" {
			r.Up++
			r.RPS += p.RPS
			r.ErrPct += 100 * p.ErrRate * p.RPS
			regionLat[n.region].Merge(lat)
		}
	}
	for name, r := range regions {
		r.P99MS = ms(regionLat[name].Quantile(0.99))
		if r.RPS > 0 {
			r.ErrPct /= r.RPS
		}
		v.Regions = append(v.Regions, *r)
	}
	slices.SortFunc(v.Nodes, func(a, b NodeView) int { return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.Node, b.Node)) })
	slices.SortFunc(v.Regions, func(a, b RegionView) int { return cmp.Compare(a.Name, b.Name) })
	return v
}

// series buckets the in-memory samples of the nodes that match into steps
// (see seriesAcc). A node's points are in time order and all of them are
// here, so each node's figures are folded into the steps' once it is
// done: the query holds a node's steps at a time, not every node's.
func (f *fleet) series(match func(node, region string) bool, from, to time.Time, step time.Duration) []SeriesPoint {
	acc := newSeriesAcc(from, to, step)
	f.mu.RLock()
	defer f.mu.RUnlock()
	for name, n := range f.nodes {
		if !match(name, n.region) {
			continue
		}
		lo, _ := slices.BinarySearchFunc(n.points, from, func(p point, t time.Time) int { return p.T.Compare(t) })
		for _, p := range n.points[lo:] {
			acc.add(name, p)
		}
		acc.fold()
	}
	return acc.points()
}

// maxSeriesCells bounds the figures a series query holds per node and
// step (about 160 bytes each) before they are folded into the steps',
// which the rollups and the store, read segment by segment, can do only
// at the end: the API takes no token, and 100 nodes over a week at a
// step of 61 s held a million of them (the heap peaked 211 MiB higher).
// A query past it is a 422 that says so.
const maxSeriesCells = 200_000

var errTooManyCells = fmt.Errorf("the query would hold more than %d figures (nodes × steps): ask for a longer step, or one region or node", maxSeriesCells)

// seriesAcc buckets samples into steps: each node's samples in a step are
// averaged, then nodes are summed; latency histograms merge exactly. Its
// memory is bounded by the steps, a few numbers and a histogram each,
// plus the figures per node and step not yet folded into them, at most
// maxSeriesCells: past that it takes no more and full says so.
type seriesAcc struct {
	from, to time.Time
	step     time.Duration
	perNode  map[nodeStep]*nodeAcc
	totals   map[int64]*stepTotal
	lat      map[int64]*telemetry.HistogramSnapshot
	full     bool
}

type nodeStep struct {
	node string
	step int64
}

type nodeAcc struct {
	rps, cpu, errW float64
	n              int
	status         ClassRates // summed over the statusN samples that carry classes
	statusN        int
}

// stepTotal sums the nodes' averages of one step.
type stepTotal struct {
	rps, cpu, errW float64
	nodes          int
	status         *ClassRates
}

func newSeriesAcc(from, to time.Time, step time.Duration) *seriesAcc {
	return &seriesAcc{from: from, to: to, step: step, perNode: map[nodeStep]*nodeAcc{}, totals: map[int64]*stepTotal{},
		lat: map[int64]*telemetry.HistogramSnapshot{}}
}

func (a *seriesAcc) add(node string, p point) {
	h := a.addSums(node, p.T, 1, p.RPS, p.CPU, p.ErrRate*p.RPS)
	if h == nil {
		return
	}
	p.Latency.addTo(h)
	if p.HasStatus {
		na := a.perNode[nodeStep{node, p.T.UnixNano() / int64(a.step)}]
		for i, r := range p.Status {
			na.status[i] += r
		}
		na.statusN++
	}
}

// addSums adds n samples at t, by their sums (errW: error rate times rps):
// one raw sample, or a rollup bucket starting at t. It returns the step's
// histogram for their latencies, or nil when t is outside the range or
// the accumulator is full.
func (a *seriesAcc) addSums(node string, t time.Time, n int, rps, cpu, errW float64) *telemetry.HistogramSnapshot {
	if t.Before(a.from) || t.After(a.to) {
		return nil
	}
	k := t.UnixNano() / int64(a.step)
	na := a.perNode[nodeStep{node, k}]
	if na == nil {
		if len(a.perNode) >= maxSeriesCells {
			a.full = true
			return nil
		}
		na = &nodeAcc{}
		a.perNode[nodeStep{node, k}] = na
	}
	na.rps += rps
	na.cpu += cpu
	na.errW += errW
	na.n += n
	h := a.lat[k]
	if h == nil {
		h = &telemetry.HistogramSnapshot{}
		a.lat[k] = h
	}
	return h
}

// fold adds each node's average per step into the steps' totals. Only
// once every sample of a node in a step has been added: the average of
// two parts is not the average of the whole.
func (a *seriesAcc) fold() {
	for key, na := range a.perNode {
		t := a.totals[key.step]
		if t == nil {
			t = &stepTotal{}
			a.totals[key.step] = t
		}
		n := float64(na.n)
		t.rps += na.rps / n
		t.cpu += na.cpu / n
		t.errW += na.errW / n
		t.nodes++
		if na.statusN > 0 {
			if t.status == nil {
				t.status = &ClassRates{}
			}
			for i, r := range na.status {
				t.status[i] += r / float64(na.statusN)
			}
		}
	}
	clear(a.perNode)
}

func (a *seriesAcc) points() []SeriesPoint {
	a.fold()
	out := make([]SeriesPoint, 0, len(a.totals))
	for k, t := range a.totals {
		lat := a.lat[k]
		sp := SeriesPoint{T: time.Unix(0, k*int64(a.step)).UTC(), RPS: t.rps, CPU: t.cpu, Nodes: t.nodes,
			P50MS: ms(lat.Quantile(0.5)), P99MS: ms(lat.Quantile(0.99)), StatusRPS: t.status}
		if t.rps > 0 {
			sp.ErrorRate = t.errW / t.rps
		}
		out = append(out, sp)
	}
	slices.SortFunc(out, func(a, b SeriesPoint) int { return a.T.Compare(b.T) })
	return out
}

// recentDecisions returns up to limit matching decisions, newest first.
func (f *fleet) recentDecisions(match func(node, region string) bool, limit int) []telemetry.Decision {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := []telemetry.Decision{}
	for i := len(f.decisions.items) - 1; i >= 0 && len(out) < limit; i-- {
		if d := f.decisions.items[i]; match(d.Node, d.Region) {
			out = append(out, d)
		}
	}
	return out
}

// recentEvents returns up to limit events, newest first.
func (f *fleet) recentEvents(match func(node, region string) bool, limit int) []telemetry.Event {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := []telemetry.Event{}
	for i := len(f.events.items) - 1; i >= 0 && len(out) < limit; i-- {
		e := f.events.items[i]
		region := ""
		if n := f.nodes[e.Node]; n != nil {
			region = n.region
		}
		if match(e.Node, region) {
			out = append(out, e)
		}
	}
	return out
}
