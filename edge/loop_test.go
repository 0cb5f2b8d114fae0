package edge

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestProxyLoopIsRefused: a backend that is the node itself (a config
// slip, or a discovery answer naming the node) turned one request into a
// chain of hops through the node until the service's max_requests ran out
// (1,024 hops, then 502; meanwhile every other client got 503).
func TestProxyLoopIsRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	n := startNode(t, strings.Replace(nodeYAML("round_robin", "http://"+addr), `http: "127.0.0.1:0"`, fmt.Sprintf("http: %q", addr), 1))
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	hops := n.services()[0].Status(time.Now()).Backends[0].Requests
	if resp.StatusCode != http.StatusLoopDetected || hops != 1 {
		t.Fatalf("status %d after %d hops through the node, want 508 after 1", resp.StatusCode, hops)
	}
	// Other nodes' hops before this one's hide nothing.
	resp, err = c.Do(&http.Request{Method: "GET", URL: resp.Request.URL, Header: http.Header{"Via": {"1.1 other, 2 other2 (x)"}}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusLoopDetected {
		t.Fatalf("second request: %d, want the loop's 508 again", resp.StatusCode)
	}
}
