package aggregator_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime/debug"
	"testing"
	"time"

	"perigee/memtest"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// A series query averages each node's samples per step, so it holds a
// figure per node and step, and anyone may ask one: 100 nodes over a week
// at a step of 61 s (9,858 steps) held a million of them, and the heap
// peaked 211 MiB higher for one GET, where the aggregator's whole view of
// such a fleet is some 25 MiB. A query holds at most 200,000 of them now,
// and past that is a 422 that says to ask for a longer step.
func TestSeriesQueryHoldsBoundedNodeSteps(t *testing.T) {
	const nodes, samples = 100, 10_000
	addTokens, token := manyNodes(nodes)
	a := startAggregator(t, addTokens)
	now := time.Now()
	for i := range nodes {
		node := fmt.Sprintf("n-%d", i)
		b := &wire.Batch{Node: node, Seq: 1, Created: now}
		for k := range samples { // a sample a minute, the last week
			b.Samples = append(b.Samples, telemetry.NodeSample{Node: node, Region: "eu-west", Time: now.Add(-time.Duration(samples-k) * time.Minute), RPS: 1})
		}
		if status, msg := post(t, a, token(i), seal(t, b)); status != 200 {
			t.Fatalf("%s: %d %s", node, status, msg)
		}
	}
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	var status int
	var body []byte
	grew := memtest.PeakGrowthDuring(func() { status, body = a.get(t, "/v1/series?window=167h&step=61s") })
	t.Logf("a week of %d nodes at a step of 61 s: %d %.200s; heap peaked %d MiB above where it started", nodes, status, body, grew>>20)
	if status != http.StatusUnprocessableEntity {
		t.Fatalf("answered %d, want 422", status)
	}
	// The segment the query reads (a query at a step of 2 h peaks 63 MiB
	// higher) and at most maxSeriesCells figures; before, 211 MiB.
	if grew > 128<<20 {
		t.Fatalf("the heap peaked %d MiB above where it started", grew>>20)
	}
	// A step that keeps the figures within the bound sees every node.
	status, body = a.get(t, "/v1/series?window=167h&step=2h")
	var series struct{ Points []struct{ Nodes int } }
	if err := json.Unmarshal(body, &series); status != http.StatusOK || err != nil || len(series.Points) == 0 {
		t.Fatalf("a week at a step of 2h: %d %.300s", status, body)
	}
	if n := series.Points[len(series.Points)/2].Nodes; n != nodes {
		t.Fatalf("a week at a step of 2h: %d nodes in a point, want %d", n, nodes)
	}
}
