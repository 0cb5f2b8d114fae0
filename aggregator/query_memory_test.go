package aggregator_test

import (
	"io"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"perigee/memtest"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// A series query past the memory window reads the store, a whole segment
// (up to 64 MiB) in memory at a time, and anyone may ask one: the API
// takes no token. Sixteen at once held sixteen segments. Store queries
// now run two at a time; the rest wait a moment, then get 503 and retry.
func TestLongQueriesHoldBoundedMemory(t *testing.T) {
	a := startAggregator(t, nil)
	// About 48 MiB stored: 12 batches of 4 MiB of incompressible paths.
	rng := rand.New(rand.NewPCG(1, 2))
	for k := range 12 {
		now := time.Now()
		b := &wire.Batch{Node: "node-a", Seq: uint64(k + 1), Created: now, Samples: []telemetry.NodeSample{sample("node-a", k)}}
		for range 64 {
			p := make([]byte, 64<<10)
			for i := range p {
				p[i] = 'a' + byte(rng.IntN(26))
			}
			b.Access = append(b.Access, telemetry.AccessRecord{Time: now, Route: "r", Service: "api", Method: "GET", Path: string(p), Status: 200, Proto: "HTTP/2.0", Client: "192.0.2.1"})
		}
		if status, msg := post(t, a, tokenA, seal(t, b)); status != 200 {
			t.Fatalf("batch %d: %d %s", k, status, msg)
		}
	}
	// The collector runs close to what is live, so the peak is what the
	// queries hold rather than garbage not yet collected.
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	var mu sync.Mutex
	statuses := map[int]int{}
	grew := memtest.PeakGrowthDuring(func() {
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				resp, err := a.client.Get(a.url("/v1/series?window=1h&step=7s"))
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			})
		}
		wg.Wait()
	})
	t.Logf("16 long queries over 48 MiB stored: answers %v; heap peaked %d MiB above where it started", statuses, grew>>20)
	if statuses[http.StatusOK] == 0 {
		t.Fatalf("no query answered: %v", statuses)
	}
	// Two queries hold two segments and a batch each, about 120 MiB live,
	// and the collector lets the heap run past that; sixteen held 1 GiB.
	if grew>>20 > 512 {
		t.Fatalf("the heap peaked %d MiB above where it started", grew>>20)
	}
}
