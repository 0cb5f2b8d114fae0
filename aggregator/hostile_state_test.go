package aggregator_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/memtest"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// A batch's samples in reverse time order: a few hundred bytes on the wire,
// 65,536 samples each older than all before it. The fleet view inserted
// each in time order one by one, moving every point already held, so this
// one frame cost minutes of CPU under the view's lock (55 s for 273 bytes,
// and 1,000× the samples of a real batch would be the square of that). It
// is answered within seconds now, and the view holds the newest sample.
func TestSamplesInReverseOrderCostLinearTime(t *testing.T) {
	a := startAggregator(t, nil)
	now := time.Now()
	b := &wire.Batch{Node: "node-a", Seq: 1, Created: now}
	for j := range wire.MaxRecords {
		b.Samples = append(b.Samples, telemetry.NodeSample{Node: "node-a", Region: "eu-west", Time: now.Add(-time.Duration(j) * time.Millisecond), RPS: float64(j)})
	}
	frame := seal(t, b)
	start := time.Now()
	status, msg := post(t, a, tokenA, frame)
	took := time.Since(start)
	t.Logf("%d-byte frame of %d samples in reverse order answered %d after %v", len(frame), len(b.Samples), status, took)
	if status != 200 {
		t.Fatalf("got %d %s", status, msg)
	}
	if took > 10*time.Second {
		t.Fatalf("answered after %v", took)
	}
	n, ok := fleetNode(t, a, "node-a")
	if !ok || !n.SampledAt.Equal(now) || n.RPS != 0 {
		t.Fatalf("fleet view: %+v, want the newest sample (rps 0 at %v)", n, now)
	}
}

// The fleet view keeps the latest 10,000 decisions and events, and each
// string in one may be up to a MiB: a node with a valid token once grew
// the heap by 7 MiB per 900-byte frame (293 MiB after 40 decisions, 70
// GB before the count bound would have held). The strings they hold are
// bounded now, and the newest are still shown.
func TestDecisionsAndEventsHoldBoundedMemory(t *testing.T) {
	a := startAggregator(t, nil)
	big := strings.Repeat("x", 1<<20-64)
	heap := memtest.LiveHeap
	before := heap()
	const batches = 40
	for k := range batches {
		now := time.Now()
		b := &wire.Batch{Node: "node-a", Seq: uint64(k + 1), Created: now,
			Decisions: []telemetry.Decision{{Time: now, Policy: big, Action: big, Service: big, Target: big, Reason: big, Rejected: fmt.Sprint(k)}},
			Events:    []telemetry.Event{{Time: now, Kind: big, Fields: map[string]string{"a": big, "b": big, "c": big, "n": fmt.Sprint(k)}}}}
		if status, msg := post(t, a, tokenA, seal(t, b)); status != 200 {
			t.Fatalf("batch %d: %d %s", k, status, msg)
		}
	}
	grew := heap() - before
	t.Logf("heap grew %.1f MiB after %d batches, each a decision and an event of about 5 MiB", float64(grew)/(1<<20), batches)
	if grew > 64<<20 {
		t.Fatalf("heap grew %.1f MiB", float64(grew)/(1<<20))
	}
	var d struct{ Decisions []telemetry.Decision }
	a.getJSON(t, "/v1/decisions?limit=1", &d)
	var e struct{ Events []telemetry.Event }
	a.getJSON(t, "/v1/events?limit=1", &e)
	last := fmt.Sprint(batches - 1)
	if len(d.Decisions) != 1 || d.Decisions[0].Rejected != last || len(e.Events) != 1 || e.Events[0].Fields["n"] != last {
		t.Fatalf("the newest decision and event are not shown")
	}
}

// A sample's circuit overflows name their services, and the fleet view
// keeps them with each of a node's points (up to 10,000): with names of a
// MiB, a node grew the heap by 15 MiB per frame of a few hundred bytes. A
// node's points are bounded in bytes as in count now, the newest kept.
func TestOverflowNamesHoldBoundedMemory(t *testing.T) {
	a := startAggregator(t, nil)
	heap := memtest.LiveHeap
	before := heap()
	const batches = 40
	now := time.Now()
	for k := range batches {
		s := telemetry.NodeSample{Node: "node-a", Region: "eu-west", Time: now.Add(time.Duration(k-batches) * time.Millisecond), RPS: float64(k),
			Services: map[string]telemetry.ServiceSample{}}
		for j := range 6 {
			name := fmt.Sprintf("%d-%s", j, strings.Repeat("s", 1<<20-64))
			s.Services[name] = telemetry.ServiceSample{Overflow: map[string]uint64{"max_requests": 1}}
		}
		b := &wire.Batch{Node: "node-a", Seq: uint64(k + 1), Created: now, Samples: []telemetry.NodeSample{s}}
		if status, msg := post(t, a, tokenA, seal(t, b)); status != 200 {
			t.Fatalf("batch %d: %d %s", k, status, msg)
		}
	}
	grew := heap() - before
	t.Logf("heap grew %.1f MiB after %d batches, each a sample overflowing 6 services named in 6 MiB", float64(grew)/(1<<20), batches)
	if grew > 64<<20 {
		t.Fatalf("heap grew %.1f MiB", float64(grew)/(1<<20))
	}
	if n, ok := fleetNode(t, a, "node-a"); !ok || n.RPS != batches-1 {
		t.Fatalf("fleet view: %+v, want the newest sample", n)
	}
}

// The rollup of the segment being written keys its buckets by node and
// region, and a region name on the wire may be a MiB: a node naming a new
// one in each sample grew the heap by 6 MiB per frame of a few hundred
// bytes, until the segment was sealed (an hour). The names the buckets
// hold are bounded now: past the bound the rollup gives up, as it does
// past its bucket count, and queries read that segment's records.
func TestRollupRegionNamesHoldBoundedMemory(t *testing.T) {
	a := startAggregator(t, nil)
	before := memtest.LiveHeap()
	const batches = 40
	now := time.Now()
	for k := range batches {
		b := &wire.Batch{Node: "node-a", Seq: uint64(k + 1), Created: now}
		for j := range 6 {
			b.Samples = append(b.Samples, telemetry.NodeSample{Node: "node-a", Region: fmt.Sprintf("%d-%d-%s", k, j, strings.Repeat("r", 1<<20-64)),
				Time: now.Add(time.Duration(6*(k-batches)+j) * time.Millisecond), RPS: 1})
		}
		if status, msg := post(t, a, tokenA, seal(t, b)); status != 200 {
			t.Fatalf("batch %d: %d %s", k, status, msg)
		}
	}
	grew := memtest.LiveHeap() - before
	t.Logf("heap grew %.1f MiB after %d batches, each of 6 samples in regions named in 6 MiB", float64(grew)/(1<<20), batches)
	if grew > 64<<20 {
		t.Fatalf("heap grew %.1f MiB", float64(grew)/(1<<20))
	}
}

// Files of the data directory the aggregator did not write are neither
// read through nor written through: a FIFO under the checkpoint's name
// held the start in os.ReadFile for good, and a symlink planted under its
// temporary name had the checkpoint written where it points.
func TestDataDirFollowsNothingItDidNotWrite(t *testing.T) {
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	started := make(chan *agg, 1)
	go func() {
		started <- startAggregator(t, func(c *aggregator.Config) {
			if err := syscall.Mkfifo(filepath.Join(c.DataDir, "dedup.state"), 0o600); err != nil {
				t.Error(err)
			}
			if err := os.Symlink(victim, filepath.Join(c.DataDir, "dedup.state.tmp")); err != nil {
				t.Error(err)
			}
		})
	}()
	var a *agg
	select {
	case a = <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the aggregator did not start")
	}
	b := &wire.Batch{Node: "node-a", Seq: 1, Created: time.Now(), Samples: []telemetry.NodeSample{sample("node-a", 1)}}
	if status, msg := post(t, a, tokenA, seal(t, b)); status != 200 {
		t.Fatalf("%d %s", status, msg)
	}
	a.stop() // which writes the checkpoint
	if got, err := os.ReadFile(victim); err != nil || string(got) != "keep me" {
		t.Fatalf("the file the planted temporary name points to holds %.40q, %v", got, err)
	}
	if info, err := os.Stat(filepath.Join(a.dataDir, "dedup.state")); err != nil || !info.Mode().IsRegular() {
		t.Fatalf("checkpoint: %v, %v", info, err)
	}
}

// JSON has no NaN nor infinity, and encoding/json refuses them: one sample
// of one node with a NaN rate (or two whose rates sum past the largest
// float) made /v1/fleet, /v1/series and /v1/decisions answer every client
// 200 with an empty body, and the dashboard with them. The view counts
// such a figure as 0 now, and the other nodes' figures are untouched.
func TestNonFiniteFiguresCannotBreakTheAPI(t *testing.T) {
	a := startAggregator(t, nil)
	now := time.Now()
	bad := sample("node-a", 1)
	bad.RPS, bad.CPU = math.NaN(), math.Inf(1)
	bad.Services["api"] = telemetry.ServiceSample{RPS: math.MaxFloat64, ErrorRate: math.Inf(-1)}
	worse := bad
	worse.Time = now.Add(-time.Second)
	b := &wire.Batch{Node: "node-a", Seq: 1, Created: now, Samples: []telemetry.NodeSample{worse, bad},
		Decisions: []telemetry.Decision{{Time: now, Policy: "p", Action: "scale", Value: math.Inf(1)}}}
	if status, msg := post(t, a, tokenA, seal(t, b)); status != 200 {
		t.Fatalf("%d %s", status, msg)
	}
	good := &wire.Batch{Node: "node-b", Seq: 1, Created: now, Samples: []telemetry.NodeSample{sample("node-b", 7)}}
	if status, msg := post(t, a, tokenB, seal(t, good)); status != 200 {
		t.Fatalf("%d %s", status, msg)
	}
	var fleet aggregator.FleetView
	a.getJSON(t, "/v1/fleet", &fleet)
	var series struct{ Points []aggregator.SeriesPoint }
	a.getJSON(t, "/v1/series?step=1s", &series)
	var decisions struct{ Decisions []telemetry.Decision }
	a.getJSON(t, "/v1/decisions", &decisions)
	if n, ok := fleetNode(t, a, "node-b"); !ok || n.RPS != 7 {
		t.Fatalf("node-b: %+v", n)
	}
	if len(series.Points) == 0 || len(decisions.Decisions) != 1 {
		t.Fatalf("series %+v, decisions %+v", series.Points, decisions.Decisions)
	}
}
