package aggregator_test

import (
	"strings"
	"testing"
	"time"

	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// The node's cumulative encode CPU is a counter of seconds, so Prometheus
// sees it as one: `_seconds_total`, TYPE counter, and rate() applies.
func TestEncodeCPUIsASecondsCounter(t *testing.T) {
	a := startAggregator(t, nil)
	now := time.Now()
	frame := seal(t, &wire.Batch{Node: "node-a", Seq: 1, Created: now, Samples: []telemetry.NodeSample{sample("node-a", 5)},
		Cost: &wire.Cost{EncodeCPU: 1500 * time.Millisecond}})
	if status, msg := post(t, a, tokenA, frame); status != 200 {
		t.Fatalf("batch: %d %s", status, msg)
	}
	body := a.metrics(t)
	if !strings.Contains(body, "# TYPE perigee_node_telemetry_encode_cpu_seconds_total counter\n") {
		t.Errorf("encode CPU is not a _seconds_total counter:\n%s", grepLines(body, "encode_cpu"))
	}
	if got := metricValue(body, `perigee_node_telemetry_encode_cpu_seconds_total{node="node-a",region="eu-west"}`); got != "1.5" {
		t.Errorf("encode CPU = %s, want 1.5", got)
	}
	if !strings.Contains(body, "# TYPE perigee_node_rps gauge\n") {
		t.Errorf("perigee_node_rps is no longer a gauge:\n%s", grepLines(body, "perigee_node_rps"))
	}
}

func grepLines(body, sub string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
