package edge

import (
	"net/http"
	"testing"
)

// A backend's 103 Early Hints reaches the client, and the final response
// still carries the node's own headers: relaying a 1xx clears the header
// map, which took X-Request-Id and Alt-Svc off every response after one.
func TestFinalResponseAfterEarlyHintsKeepsTheNodesHeaders(t *testing.T) {
	n := startNode(t, listenAny+`services:
  api: {backends: [{url: "`+serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Write([]byte("ok"))
	}))+`"}]}
routes:
  - {match: {path_prefix: /}, service: api}
`)
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			resp, body := get(t, pc.client, "https://"+n.Addrs().HTTPS+"/")
			if resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Errorf("no X-Request-Id on the final response: %v", resp.Header)
			}
			if pc.proto != 3 && resp.Header.Get("Alt-Svc") == "" {
				t.Errorf("no Alt-Svc on the final response: %v", resp.Header)
			}
		})
	}
}
