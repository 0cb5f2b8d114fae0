package aggregator_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"perigee/aggregator"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// A node with a valid token posts batches whose bodies never end, over
// HTTP/3, which has no server read timeout: each held one of the
// max_concurrent_ingests slots for good, so every other node got 429 for
// as long as it liked. A node now reads one batch at a time (its shipper
// sends one at a time), and a body gets bodyTimeout to arrive.
func TestSlowBodiesCannotHoldTheIngestSlots(t *testing.T) {
	a := startAggregator(t, func(c *aggregator.Config) { c.MaxConcurrentIngests = 2 })
	pem, err := os.ReadFile(a.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(func() { tr.Close() })
	h3 := &http.Client{Transport: tr}
	good := seal(t, &wire.Batch{Node: "node-a", Seq: 1, Created: time.Now(), Samples: []telemetry.NodeSample{sample("node-a", 1)}})
	type answer struct {
		status int
		after  time.Duration
		err    error
	}
	answers := make(chan answer, 2)
	var writers sync.WaitGroup
	start := time.Now()
	for range 2 {
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close() })
		writers.Go(func() { pw.Write(good[:10]) }) // and then nothing
		req, _ := http.NewRequest(http.MethodPost, a.url("/v1/ingest"), pr)
		req.Header.Set("Authorization", "Bearer "+tokenA)
		go func() {
			resp, err := h3.Do(req)
			if err != nil {
				answers <- answer{err: err, after: time.Since(start)}
				return
			}
			resp.Body.Close()
			answers <- answer{status: resp.StatusCode, after: time.Since(start)}
		}()
	}
	writers.Wait()
	// The second of node-a's is refused at once, and node-b is served.
	select {
	case first := <-answers:
		if first.status != http.StatusTooManyRequests {
			t.Fatalf("node-a's second slow batch: %+v, want 429", first)
		}
	case <-time.After(aggregator.BodyTimeout):
		t.Fatalf("neither of node-a's slow batches answered after %v", aggregator.BodyTimeout)
	}
	b := seal(t, &wire.Batch{Node: "node-b", Seq: 1, Created: time.Now(), Samples: []telemetry.NodeSample{sample("node-b", 1)}})
	if status, msg := post(t, a, tokenB, b); status != 200 {
		t.Fatalf("node-b while node-a trickles: %d %s", status, msg)
	}
	// The slow one is cut off and told why.
	select {
	case ans := <-answers:
		t.Logf("slow body answered %d after %v", ans.status, ans.after)
		if ans.status != http.StatusRequestTimeout || ans.after > 2*aggregator.BodyTimeout {
			t.Fatalf("slow body: %+v, want 408 within %v", ans, 2*aggregator.BodyTimeout)
		}
	case <-time.After(4 * aggregator.BodyTimeout):
		t.Fatalf("slow body still held after %v", 4*aggregator.BodyTimeout)
	}
}
