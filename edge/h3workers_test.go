package edge

import (
	"bytes"
	"context"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"
)

// HTTP/3 request streams run on workers kept between requests; a node
// that shuts down leaves none behind, without waiting out their idle time.
func TestHTTP3WorkersEndWithTheNode(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))))
	c := h3Client(t)
	url := "https://" + n.Addrs().HTTPS + "/"
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 4 {
				if resp, body := get(t, c, url); resp.StatusCode != 200 || body != "ok" {
					t.Errorf("GET: %d %q", resp.StatusCode, body)
				}
			}
		})
	}
	wg.Wait()
	if h3Workers() == 0 {
		t.Fatal("no HTTP/3 worker waits for the next stream after the requests")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(h3WorkerIdle / 2)
	for h3Workers() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d HTTP/3 workers still wait after the node shut down", h3Workers())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// h3Workers counts the goroutines in h3Server.worker.
func h3Workers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("edge.(*h3Server).worker("))
		}
		buf = make([]byte, 2*len(buf))
	}
}
