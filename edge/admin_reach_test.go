package edge

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// A backend that is the node's own admin listener (a config slip, or a
// service a registry points there) let any client reach the admin API
// through the proxy: without a token it answers whatever comes from
// loopback, /config and POST /reload among it. The admin API refuses a
// request that has passed through this node.
func TestAdminAPIIsNotReachableThroughTheProxy(t *testing.T) {
	admin := freePort(t)
	n := startNode(t, fmt.Sprintf(`listen: {https: "127.0.0.1:0", admin: %q}
access_log: {enabled: false}
services:
  api: {backends: [{url: "http://%s"}]}
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`, admin, admin))
	for _, path := range []string{"/config", "/status", "/metrics"} {
		resp, body := get(t, h1Client(), "https://"+n.Addrs().HTTPS+path)
		if resp.StatusCode == 200 {
			t.Fatalf("a client read the admin API's %s through the proxy: %.200s", path, body)
		}
	}
	resp, body := get(t, h1Client(), "http://"+admin+"/status")
	if resp.StatusCode != 200 {
		t.Fatalf("the admin API itself: %d %.200s", resp.StatusCode, body)
	}
}

// The admin listener closes a connection that stays idle past
// timeouts.idle, as every other listener does; it held one for good.
func TestAdminListenerClosesIdleConnections(t *testing.T) {
	n := startNode(t, "timeouts: {idle: 500ms}\n"+nodeYAML("round_robin", backend(t, "b1")))
	c, err := net.Dial("tcp", n.Addrs().Admin)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	start := time.Now()
	b, err := io.ReadAll(c) // the answer, then EOF when the node closes
	if !strings.HasPrefix(string(b), "HTTP/1.1 200") || err != nil {
		t.Fatalf("read %.80q, %v after %v; want the answer, then the connection closed", b, err, time.Since(start))
	}
}

// Another node's proxy, or any proxy on this host, is loopback to the
// admin listener too: node A with node B's admin API as its backend let
// any client read B's /config. Without a token the API answers only
// requests made on this host, not ones a proxy passed on.
func TestAdminAPIIsNotReachableThroughAnotherProxy(t *testing.T) {
	admin := freePort(t)
	startNode(t, fmt.Sprintf("node: {id: b}\nlisten: {https: \"127.0.0.1:0\", admin: %q}\naccess_log: {enabled: false}\n", admin))
	a := startNode(t, fmt.Sprintf(`node: {id: a}
listen: {https: "127.0.0.1:0"}
access_log: {enabled: false}
services:
  api: {backends: [{url: "http://%s"}]}
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`, admin))
	for _, path := range []string{"/config", "/status"} {
		if resp, body := get(t, h1Client(), "https://"+a.Addrs().HTTPS+path); resp.StatusCode == 200 {
			t.Fatalf("a client read node b's admin %s through node a: %.200s", path, body)
		}
	}
	for _, hdr := range [][]string{{"Via", "1.1 nginx"}, {"X-Forwarded-For", "203.0.113.9"}, {"Forwarded", "for=203.0.113.9"}} {
		if resp, _ := get(t, h1Client(), "http://"+admin+"/status", hdr...); resp.StatusCode != 403 {
			t.Errorf("a request with %s reached the token-less admin API: %d", hdr[0], resp.StatusCode)
		}
	}
	if resp, body := get(t, h1Client(), "http://"+admin+"/status"); resp.StatusCode != 200 {
		t.Fatalf("the admin API itself: %d %.200s", resp.StatusCode, body)
	}
}
