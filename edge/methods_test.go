package edge

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// Methods are case-sensitive (RFC 9110 9.1): "get" is not GET, so a route
// that names GET does not match it, and a backend that folds case would
// serve it as GET past the route's transforms. The node answers 400 to any
// method not spelled in upper case, over every protocol, before routing.
func TestMethodCaseCannotSkipARoute(t *testing.T) {
	backend := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "backend "+r.Method+" "+r.URL.Path)
	}))
	n := startNode(t, listenAny+`transforms:
  apikey: {module: "`+exampleModule(t, "apikey")+`", config: {keys: "demo-key\n"}, pool: 2, timeout: 10s}
services:
  sample: {backends: [{url: "`+backend+`"}]}
routes:
  - {name: private, match: {path_prefix: /private/, methods: [GET]}, service: sample, transforms: [apikey]}
  - {name: rest, match: {path_prefix: /}, service: sample}
`)
	base := "https://" + n.Addrs().HTTPS
	for _, method := range []string{"get", "Get", "gEt", "post", "M-search"} {
		status, body := rawH1(t, n.Addrs().HTTPS, method+" /private/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if status != http.StatusBadRequest || strings.HasPrefix(body, "backend") {
			t.Errorf("HTTP/1.1 %s: %d %q, want 400 from the node", method, status, body)
		}
		for _, pc := range allClients(t)[1:] {
			req, err := http.NewRequest(method, base+"/private/x", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := pc.client.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", pc.name, method, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || strings.HasPrefix(string(b), "backend") {
				t.Errorf("%s %s: %d %q, want 400 from the node", pc.name, method, resp.StatusCode, b)
			}
		}
	}
	// Upper-case methods route as before: GET meets the transform, and an
	// extension method the GET route does not name falls to the next route.
	for _, pc := range allClients(t) {
		for method, want := range map[string]int{"GET": http.StatusUnauthorized, "M-SEARCH": http.StatusOK, "PROPFIND": http.StatusOK} {
			req, _ := http.NewRequest(method, base+"/private/x", nil)
			resp, err := pc.client.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", pc.name, method, err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("%s %s: %d, want %d", pc.name, method, resp.StatusCode, want)
			}
		}
	}
}

// The node is a reverse proxy: it relays no tunnels. A CONNECT that Go's
// listeners take (HTTP/1.1 with a path for its target, HTTP/3's extended
// CONNECT) went to the backend as a CONNECT, and the client got a 200 for
// a tunnel the node never relays, the upstream connection held until
// upstream_read. It gets 501 before routing, and no backend sees it.
func TestConnectIsRefused(t *testing.T) {
	var reached atomic.Int32
	n := startNode(t, listenAny+`services:
  api: {backends: [{url: "`+serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
	}))+`"}]}
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`)
	if status, body := rawH1(t, n.Addrs().HTTPS, "CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n"); status != http.StatusNotImplemented {
		t.Errorf("HTTP/1.1 CONNECT /x: %d %q, want 501", status, body)
	}
	req, _ := http.NewRequest(http.MethodConnect, "https://"+n.Addrs().HTTPS+"/x", nil)
	req.Proto = "websocket" // RFC 9220
	resp, err := h3Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("HTTP/3 extended CONNECT: %d, want 501", resp.StatusCode)
	}
	if got := reached.Load(); got != 0 {
		t.Errorf("%d CONNECTs reached the backend", got)
	}
}
