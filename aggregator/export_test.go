package aggregator_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/aggregator/vmtest"
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
