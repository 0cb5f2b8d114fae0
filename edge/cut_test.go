package edge

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// A backend that fails mid-body: the client sees its response cut, over
// every protocol, rather than a shorter body that looks whole. Over
// HTTP/3 ReverseProxy found no net/http server in the context and
// swallowed the failure.
func TestResponseCutByTheBackendIsCutForTheClient(t *testing.T) {
	api := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 1000))
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	}))
	n := startNode(t, nodeYAML("round_robin", api))
	for _, pc := range allClients(t) {
		resp, err := pc.client.Get("https://" + n.Addrs().HTTPS + "/cut")
		if err != nil {
			continue // cut before the head reached the client
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("%s: %d bytes and a clean end, want the body cut with an error", pc.name, len(body))
		}
	}
}
