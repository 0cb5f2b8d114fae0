package edge

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A response body cut short is held against its backend (outlier
// ejection), but only when the backend cut it: a client that leaves in
// the middle of a stream, over any protocol, leaves its backends healthy.
func TestClientLeavingMidResponseDoesNotEjectTheBackend(t *testing.T) {
	stream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 100))
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	a, b := serveBackend(t, stream), serveBackend(t, stream)
	yaml := strings.Replace(nodeYAML("round_robin", a, b), "routes:", "    outlier: {consecutive_failures: 2}\nroutes:", 1)
	n := startNode(t, yaml)
	for _, pc := range allClients(t) {
		for range 4 {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+n.Addrs().HTTPS+"/stream", nil)
			resp, err := pc.client.Do(req)
			if err != nil {
				cancel()
				t.Fatalf("%s: %v", pc.name, err)
			}
			io.ReadFull(resp.Body, make([]byte, 100))
			cancel() // the client leaves mid-stream
			resp.Body.Close()
		}
		waitFor(t, "in-flight back to zero", func() bool { return n.metrics.InFlight() == 0 })
		if h := len(n.state.Load().services["api"].Healthy()); h != 2 {
			t.Fatalf("%s: %d of 2 backends healthy after clients left mid-stream", pc.name, h)
		}
	}
}
