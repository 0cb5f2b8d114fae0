package aggregator_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// The fleet view bounds the bytes its decisions, events and circuit
// overflow names hold (16 MiB of each kind, 20 MiB of a node's points),
// and the answers are those strings as JSON, where each of <, >, &, a
// control byte or a byte of bad UTF-8 is written in 6 bytes (\u003c). A
// node sending strings of them, a few compressed KiB a batch, made the
// latest decisions a 94 MB answer (the dashboard asks for them every 2 s,
// and 20 unread ones took the heap 700 MiB higher), and its overflows a
// /v1/fleet of 120 MB. The view counts what its strings take as JSON now,
// so an answer is within the bound it holds.
func TestEscapedStringsCannotInflateAnswers(t *testing.T) {
	a := startAggregator(t, nil)
	esc := strings.Repeat("<\x01\xff", 128<<10/3)
	now := time.Now()
	const batches = 40
	for k := range batches {
		s := telemetry.NodeSample{Node: "node-a", Region: "eu-west", Time: now.Add(time.Duration(k-batches) * time.Millisecond),
			Services: map[string]telemetry.ServiceSample{}}
		for j := range 6 {
			s.Services[fmt.Sprint(k, "-", j, esc)] = telemetry.ServiceSample{Overflow: map[string]uint64{"max_requests": 1}}
		}
		b := &wire.Batch{Node: "node-a", Seq: uint64(k + 1), Created: now, Samples: []telemetry.NodeSample{s},
			Decisions: []telemetry.Decision{{Time: now, Policy: esc, Action: esc, Service: esc, Target: esc, Reason: esc}},
			Events:    []telemetry.Event{{Time: now, Kind: esc, Fields: map[string]string{"a": esc, "b": esc, "c": esc, "d": esc}}}}
		if status, msg := post(t, a, tokenA, seal(t, b)); status != 200 {
			t.Fatalf("batch %d: %d %s", k, status, msg)
		}
	}
	for _, c := range []struct {
		path  string
		bound int
	}{
		{"/v1/decisions?limit=10000", 16 << 20},
		{"/v1/events?limit=10000", 16 << 20},
		{"/v1/fleet", 20 << 20},
	} {
		status, body := a.get(t, c.path)
		t.Logf("%s: %d, %.1f MiB", c.path, status, float64(len(body))/(1<<20))
		if status != 200 || len(body) > c.bound+1<<20 {
			t.Errorf("%s: %d, %d bytes, want 200 and at most the %d MiB the view holds, and a MiB", c.path, status, len(body), c.bound>>20)
		}
	}
}
