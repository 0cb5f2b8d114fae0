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

// unreadAnswers asks for path on streams streams of one HTTP/2 connection
// whose stream window is zero, so the server may send headers and no byte
// of a body, and waits for every stream's headers. It returns the statuses
// and how far the heap peaked meanwhile.
func unreadAnswers(t *testing.T, a *agg, streams int, path string, extra ...string) (map[string]int, int64) {
	t.Helper()
	// The collector runs close to what is live, so the peak is what the
	// answers hold rather than garbage not yet collected.
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	statuses := map[string]int{}
	var err error
	grew := memtest.PeakGrowthDuring(func() {
		c := h2test.Dial(t, a.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		for i := range streams {
			if err = c.Get(uint32(2*i+1), "x", path, extra...); err != nil {
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
	if statuses["200"] == 0 {
		t.Fatalf("no request answered: %v", statuses)
	}
	return statuses, grew
}

// The API takes no token, and an answer is held in memory until its client
// has read it, up to the write timeout (two minutes). The latest 10,000
// decisions of a real fleet are an answer of 3 MB: one HTTP/2 connection
// that asked for them on 200 streams and read none held 200 answers (the
// heap peaked 810 MiB higher) for those two minutes, and a client may
// open 1,024 connections. Answers being built and being written are
// bounded now: past the bound a request waits a moment, then gets 503 and
// retries.
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
	statuses, grew := unreadAnswers(t, a, streams, "/v1/decisions?limit=10000")
	t.Logf("%d unread answers of the latest 10,000 decisions: statuses %v; heap peaked %d MiB above where it started", streams, statuses, grew>>20)
	// 64 MiB of answers being written, four built and waiting, and what
	// the collector lets run past them; before, 810 MiB.
	if grew > 192<<20 {
		t.Fatalf("the heap peaked %d MiB above where it started", grew>>20)
	}
}

// /metrics takes no token either, and each request compressing its answer
// held a gzip compressor (about 800 KiB) until its client had read it: 200
// unread scrapes of a fleet of 100 nodes on one connection took the heap
// 156 MiB higher. Metrics are now an answer like the others: compressed
// within a building slot, then held as the bytes they are, within the
// budget.
func TestUnreadMetricsHoldBoundedMemory(t *testing.T) {
	const nodes = 100
	addTokens, token := manyNodes(nodes)
	a := startAggregator(t, addTokens)
	now := time.Now()
	for i := range nodes {
		node := fmt.Sprintf("n-%d", i)
		s := sample(node, i)
		s.Region = fmt.Sprintf("region-%d", i%10)
		if status, msg := post(t, a, token(i), seal(t, &wire.Batch{Node: node, Seq: 1, Created: now, Samples: []telemetry.NodeSample{s}})); status != 200 {
			t.Fatalf("%s: %d %s", node, status, msg)
		}
	}
	const streams = 200
	statuses, grew := unreadAnswers(t, a, streams, "/metrics", "accept-encoding", "gzip")
	t.Logf("%d unread scrapes of %d nodes' metrics: statuses %v; heap peaked %d MiB above where it started", streams, nodes, statuses, grew>>20)
	if grew > 48<<20 {
		t.Fatalf("the heap peaked %d MiB above where it started", grew>>20)
	}
	if m := a.metrics(t); !strings.Contains(m, `perigee_node_rps{node="n-99",region="region-9"} 99`) {
		t.Fatalf("metrics lack node n-99's rps:\n%s", grepLines(m, "n-99"))
	}
}
