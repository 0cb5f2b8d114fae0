package aggregator_test

import (
	"testing"
	"time"

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
