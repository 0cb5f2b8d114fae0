package aggregator_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/aggregator/vmtest"
	"perigee/logtest"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// Two aggregators that both receive every batch (a node that failed over
// after an answer was lost, at its worst) export into one Debian
// victoria-metrics, and a query counts every sample and access record
// exactly once: the series are a function of the batch, and the engine
// deduplicates.
func TestExportIntoVictoriaMetricsExactlyOnce(t *testing.T) {
	vmAddr := vmtest.Start(t)
	export := func(c *aggregator.Config) { c.Export = &aggregator.Export{URL: "http://" + vmAddr + "/api/v1/write"} }
	aggs := []*agg{startAggregator(t, export), startAggregator(t, export)}

	const batches = 20
	now := time.Now()
	for i := range batches {
		at := now.Add(-time.Duration(batches-i) * time.Second)
		s := sample("node-a", i+1)
		s.Time = at
		b := &wire.Batch{Node: "node-a", Seq: uint64(i + 1), Created: at, Samples: []telemetry.NodeSample{s}}
		for _, status := range []int{200, 200, 503} {
			b.Access = append(b.Access, telemetry.AccessRecord{Time: at, Route: "api-route", Service: "api", Method: "GET", Path: "/x", Status: status})
		}
		frame := seal(t, b)
		for _, a := range aggs {
			if status, msg := post(t, a, tokenA, frame); status != 200 {
				t.Fatalf("post: %d %s", status, msg)
			}
		}
	}
	for _, a := range aggs {
		eventually(t, "the export of every batch", func() bool {
			return metricValue(a.metrics(t), `perigee_aggregator_export_total{result="ok"}`) == fmt.Sprint(batches)
		})
		posted := now.Unix()
		eventually(t, "the exporter to say it caught up", func() bool {
			v, _ := strconv.ParseFloat(metricValue(a.metrics(t), "perigee_aggregator_export_caught_up_timestamp_seconds"), 64)
			return v >= float64(posted)
		})
	}
	query := func(q string) string { return vmtest.Query(vmAddr, q) }
	for q, want := range map[string]string{
		`sum(count_over_time(perigee_node_rps{node="node-a",region="eu-west"}[1h]))`:                          "20",
		`sum(sum_over_time(perigee_node_rps{node="node-a"}[1h]))`:                                             "210",
		`sum(sum_over_time(perigee_access_records{node="node-a",route="api-route",service="api"}[1h]))`:       "60",
		`sum(sum_over_time(perigee_access_records{node="node-a",status="503"}[1h]))`:                          "20",
		`sum(count_over_time(perigee_service_window_latency_seconds_count{node="node-a",service="api"}[1h]))`: "20",
	} {
		var got string
		deadline := time.Now().Add(30 * time.Second)
		for got = query(q); got != want && time.Now().Before(deadline); got = query(q) {
			time.Sleep(200 * time.Millisecond)
		}
		if got != want {
			t.Errorf("%s = %s, want %s", q, got, want)
		}
	}
}

// An engine that refuses every push (down, or answering 503) has the
// export retry each second, and each failure was a log line: 86,400 a day
// of one outage. They are logged at most once per 10 s now, with the
// count of those left out, as ingest refusals are.
func TestExportFailuresAreLoggedAtARate(t *testing.T) {
	var pushes atomic.Int64
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pushes.Add(1)
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}))
	t.Cleanup(engine.Close)
	var log logtest.Buffer
	start := time.Now()
	a := startAggregatorLogging(t, func(c *aggregator.Config) { c.Export = &aggregator.Export{URL: engine.URL + "/api/v1/write"} },
		slog.New(slog.NewTextHandler(&log, nil)))
	b := &wire.Batch{Node: "node-a", Seq: 1, Created: time.Now(), Samples: []telemetry.NodeSample{sample("node-a", 1)}}
	if status, msg := post(t, a, tokenA, seal(t, b)); status != 200 {
		t.Fatalf("post: %d %s", status, msg)
	}
	eventually(t, "four pushes refused", func() bool { return pushes.Load() >= 4 })
	a.stop()
	allowed := 1 + int(time.Since(start)/(10*time.Second))
	if lines := strings.Count(log.String(), `msg="export failed, will retry"`); lines < 1 || lines > allowed {
		t.Fatalf("%d pushes refused in %v logged %d lines, want 1 to %d:\n%s", pushes.Load(), time.Since(start), lines, allowed, log.String())
	}
}
