package edge

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// echoTrailers answers the request trailers it received, once the body is
// read, as JSON.
var echoTrailers = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	json.NewEncoder(w).Encode(r.Trailer)
})

// postWithTrailers sends a body with the trailers tr, declared, and
// returns the trailers the backend received.
func postWithTrailers(t *testing.T, c *http.Client, url string, tr http.Header) http.Header {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1 // chunked over HTTP/1.1, which trailers need
	req.Trailer = tr
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var seen http.Header
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &seen) != nil {
		t.Fatalf("POST %s: %d %q", url, resp.StatusCode, b)
	}
	return seen
}

// A client's request trailers reach the backend with their values over
// every protocol. Over HTTP/3 only their names did: quic-go puts the
// values in a map of its own on its own copy of the request, which the
// node's handler, working on a copy of that, never sees.
func TestRequestTrailersReachTheBackendOverEveryProtocol(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, echoTrailers)))
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			seen := postWithTrailers(t, pc.client, "https://"+n.Addrs().HTTPS+"/", http.Header{"X-Checksum": {"abc123"}})
			if got := seen["X-Checksum"]; len(got) != 1 || got[0] != "abc123" {
				t.Fatalf("the backend got trailers %v, want X-Checksum: abc123", seen)
			}
		})
	}
}

// What the node drops from or sets in a client's header section cannot
// reach the backend as a request trailer either: a backend that merges
// trailers into the headers (Tomcat did, before allowedTrailerHeaders)
// would read the client's X-Real-IP, X-Perigee-Country or request id as
// the node's. Other trailers go on.
func TestRequestTrailersCannotCarryTheNodesHeaders(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, echoTrailers)))
	own := []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Real-Ip", "True-Client-Ip", "Cf-Connecting-Ip", "Forwarded",
		"X-Perigee-Country", "X_real_ip", "X-Request-Id", "Traceparent", "Tracestate", "Via", "X-Original-Url"}
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			tr := http.Header{"X-Checksum": {"abc123"}}
			for _, k := range own {
				tr[k] = []string{"6.6.6.6"}
			}
			seen := postWithTrailers(t, pc.client, "https://"+n.Addrs().HTTPS+"/", tr)
			for _, k := range own {
				if v, ok := seen[k]; ok {
					t.Errorf("the backend got trailer %s %q", k, v)
				}
			}
			if got := seen["X-Checksum"]; len(got) != 1 || got[0] != "abc123" {
				t.Errorf("the backend got trailers %v, want X-Checksum: abc123 among them", seen)
			}
		})
	}
}
