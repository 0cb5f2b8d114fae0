package aggregator_test

import (
	"strings"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/aggregator/vmtest"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// The fleet answer and the series give a node's responses per second by
// status class, redirects apart from what it served, from the samples that
// carry them; a node whose samples carry none shows none rather than zeros.
func TestFleetAndSeriesBreakResponsesDownByStatusClass(t *testing.T) {
	a := startAggregator(t, nil)
	now := time.Now()
	for i, st := range []telemetry.StatusClasses{{0, 40, 60, 2, 0}, {0, 20, 80, 0, 4}} {
		at := now.Add(time.Duration(i-2) * time.Second)
		s := sample("node-a", 100)
		s.Time, s.Window, s.Status = at, 2*time.Second, st
		if status, msg := post(t, a, tokenA, seal(t, &wire.Batch{Node: "node-a", Seq: uint64(i + 1), Created: at, Samples: []telemetry.NodeSample{s}})); status != 200 {
			t.Fatalf("post: %d %s", status, msg)
		}
	}
	old := sample("node-b", 5)
	if status, msg := post(t, a, tokenB, seal(t, &wire.Batch{Node: "node-b", Seq: 1, Created: now, Samples: []telemetry.NodeSample{old}})); status != 200 {
		t.Fatalf("post: %d %s", status, msg)
	}
	n, ok := fleetNode(t, a, "node-a")
	if want := (aggregator.ClassRates{0, 10, 40, 0, 2}); !ok || n.StatusRPS == nil || *n.StatusRPS != want {
		t.Fatalf("node-a's last sample by class: %v, want %v", n.StatusRPS, want)
	}
	if n, _ := fleetNode(t, a, "node-b"); n.StatusRPS != nil {
		t.Fatalf("a node without classes shows %v", *n.StatusRPS)
	}
	body := a.metrics(t)
	for series, want := range map[string]string{
		`perigee_node_responses_per_second{class="3xx",node="node-a",region="eu-west"}`: "40",
		`perigee_node_responses_per_second{class="5xx",node="node-a",region="eu-west"}`: "2",
		`perigee_fleet_responses_per_second{class="2xx"}`:                               "10",
	} {
		if got := metricValue(body, series); got != want {
			t.Errorf("%s = %q, want %q", series, got, want)
		}
	}
	if strings.Contains(body, `perigee_node_responses_per_second{class="2xx",node="node-b"`) {
		t.Error("a node without classes has response series")
	}

	var series struct{ Points []aggregator.SeriesPoint }
	a.getJSON(t, "/v1/series?scope=node&name=node-a&window=1m&step=1m", &series)
	var got aggregator.ClassRates
	for _, p := range series.Points {
		if p.StatusRPS == nil {
			t.Fatalf("a step of node-a without classes: %+v", p)
		}
		for i, r := range p.StatusRPS {
			got[i] += r
		}
	}
	// One step holds both samples, averaged; two steps hold one each.
	if want := (aggregator.ClassRates{0, 15, 35, 0.5, 1}); len(series.Points) == 1 && got != want {
		t.Fatalf("node-a's step by class: %v, want %v", got, want)
	} else if want := (aggregator.ClassRates{0, 30, 70, 1, 2}); len(series.Points) == 2 && got != want {
		t.Fatalf("node-a's steps by class: %v, want %v", got, want)
	}
	var oldSeries struct{ Points []aggregator.SeriesPoint }
	a.getJSON(t, "/v1/series?scope=node&name=node-b&window=1m&step=1m", &oldSeries)
	if len(oldSeries.Points) == 0 {
		t.Fatal("node-b has no series")
	}
	for _, p := range oldSeries.Points {
		if p.StatusRPS != nil {
			t.Fatalf("node-b's step has classes: %+v", p)
		}
	}
}

// The export writes each window's responses by class, the node's and each
// service's, into a real victoria-metrics.
func TestExportCarriesResponsesByStatusClass(t *testing.T) {
	vmAddr := vmtest.Start(t)
	a := startAggregator(t, func(c *aggregator.Config) { c.Export = &aggregator.Export{URL: "http://" + vmAddr + "/api/v1/write"} })
	now := time.Now()
	for i := range 2 {
		at := now.Add(time.Duration(i-2) * time.Second)
		s := sample("node-a", 10)
		s.Time, s.Status = at, telemetry.StatusClasses{0, 6, 3, 1}
		api := s.Services["api"]
		api.Status = telemetry.StatusClasses{0, 6, 3}
		s.Services["api"] = api
		if status, msg := post(t, a, tokenA, seal(t, &wire.Batch{Node: "node-a", Seq: uint64(i + 1), Created: at, Samples: []telemetry.NodeSample{s}})); status != 200 {
			t.Fatalf("post: %d %s", status, msg)
		}
	}
	vmtest.Expect(t, vmAddr, map[string]string{
		`sum(sum_over_time(perigee_node_window_responses{node="node-a",region="eu-west",class="3xx"}[1h]))`: "6",
		`sum(sum_over_time(perigee_node_window_responses{node="node-a",class="4xx"}[1h]))`:                  "2",
		`sum(sum_over_time(perigee_service_window_responses{node="node-a",service="api",class="2xx"}[1h]))`: "12",
	})
	// A class without responses writes no series.
	if got := vmtest.Query(vmAddr, `count(count_over_time(perigee_service_window_responses{class="4xx"}[1h]))`); got != "no single result (<nil>)" {
		t.Errorf("api has 4xx series: %s", got)
	}
}
