package aggregator_test

import (
	"fmt"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"perigee/h2test"
	"perigee/memtest"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// The API takes no token, and an answer is held in memory until its client
// has read it, up to the write timeout (two minutes). The latest 10,000
// decisions of a real fleet are an answer of 3 MB: one HTTP/2 connection
// that asked for them on 200 streams and read none held 200 answers (the
// heap peaked 810 MiB higher) for those two minutes, and a client may
// open 1,024 connections.
// Answers being built and being written are bounded now: past the bound a
// request waits a moment, then gets 503 and retries.
func TestUnreadAnswersHoldBoundedMemory(t *testing.T) {
	a := startAggregator(t, nil)
	now := time.Now()
	for k := range 10 {
		b := &wire.Batch{Node: "node-a", Seq: uint64(k + 1), Created: now}
		for j := range 1000 {
			b.Decisions = append(b.Decisions, telemetry.Decision{Time: now, Region: "eu-west", Policy: "autoscale", Action: "weight", Service: "api",
				Target: fmt.Sprintf("10.0.%d.%d:8080", k, j%250), Value: 0.5, Reason: "p99 " + strings.Repeat("above target, ", 8), Applied: true})
		}
		if status, msg := post(t, a, tokenA, seal(t, b)); status != 200 {
			t.Fatalf("batch %d: %d %s", k, status, msg)
		}
	}
	const streams = 200
	// The collector runs close to what is live, so the peak is what the
	// answers hold rather than garbage not yet collected.
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	statuses := map[string]int{}
	var err error
	grew := memtest.PeakGrowthDuring(func() {
		// A stream window of zero: the server may send headers, and no byte
		// of a body.
		c := h2test.Dial(t, a.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		for i := range streams {
			if err = c.Get(uint32(2*i+1), "x", "/v1/decisions?limit=10000"); err != nil {
				return
			}
		}
		answered := 0
		err = c.ReadUntil(time.Minute, func(f http2.Frame) bool {
			if h, ok := f.(*http2.MetaHeadersFrame); ok {
				statuses[h.PseudoValue("status")]++
				answered++
			}
			return answered == streams
		})
	})
	if err != nil {
		t.Fatalf("answers %v: %v", statuses, err)
	}
	t.Logf("%d unread answers of the latest 10,000 decisions: statuses %v; heap peaked %d MiB above where it started", streams, statuses, grew>>20)
	if statuses["200"] == 0 {
		t.Fatalf("no request answered: %v", statuses)
	}
	// 64 MiB of answers being written, four built and waiting, and what
	// the collector lets run past them; before, 810 MiB.
	if grew > 192<<20 {
		t.Fatalf("the heap peaked %d MiB above where it started", grew>>20)
	}
}
