package edge

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Backends read some headers as the request's own target or method:
// X-Original-URL and X-Rewrite-URL (IIS URL Rewrite, Laminas, older
// Symfony) and X-Original-URI take over the path, X-HTTP-Method-Override
// and its kin (Express's method-override, Laravel, Rack, ASP.NET) the
// method. A client's own would have the node route one path or method and
// the backend serve another, past that one's route and transforms: the
// path headers are dropped, and a method override naming another method
// is refused before any route.
func TestClientCannotOverrideTheTargetOrMethod(t *testing.T) {
	var mu sync.Mutex
	var got []http.Header
	echo := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Clone())
		mu.Unlock()
		io.WriteString(w, r.Method+" "+r.URL.Path)
	}))
	n := startNode(t, listenAny+`services:
  api: {backends: [{url: "`+echo+`"}]}
routes:
  - {name: reads, match: {path_prefix: /public/, methods: [GET]}, service: api}
`)
	base := "https://" + n.Addrs().HTTPS
	pathHeaders := []string{"X-Original-Url", "X-Rewrite-Url", "X-Original-Uri"}
	for _, c := range allClients(t) {
		mu.Lock()
		got = nil
		mu.Unlock()
		var hdr []string
		for _, h := range pathHeaders {
			hdr = append(hdr, h, "/private/keys")
		}
		resp, body := get(t, c.client, base+"/public/x", hdr...)
		if resp.StatusCode != http.StatusOK || body != "GET /public/x" {
			t.Fatalf("%s: a request with path overrides: %s %q", c.name, resp.Status, body)
		}
		mu.Lock()
		for _, h := range pathHeaders {
			if v, ok := got[0][h]; ok {
				t.Errorf("%s: the backend got the client's %s: %q", c.name, h, v)
			}
		}
		mu.Unlock()

		for _, h := range []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"} {
			resp, body := get(t, c.client, base+"/public/x", h, "DELETE")
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "method override") {
				t.Errorf("%s: GET with %s: DELETE: %s %q; want 400", c.name, h, resp.Status, body)
			}
		}
		mu.Lock()
		if len(got) != 1 {
			t.Errorf("%s: a refused method override reached the backend (%d requests)", c.name, len(got)-1)
		}
		mu.Unlock()
		// Naming the request's own method changes nothing: it goes on.
		if resp, body := get(t, c.client, base+"/public/x", "X-HTTP-Method-Override", "get"); resp.StatusCode != http.StatusOK {
			t.Errorf("%s: an override naming the request's own method: %s %q", c.name, resp.Status, body)
		}
	}
}
