package edge

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/http-wasm/http-wasm-host-go/tck"
)

// echoHeaders answers with the request headers the backend received.
var echoHeaders = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(r.Header)
})

func TestProxiesOverHTTP1HTTP2AndHTTP3(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, echoHeaders)))
	base := "https://" + n.Addrs().HTTPS
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			resp, body := get(t, pc.client, base+"/hello", "Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "X-Forwarded-For", "203.0.113.9")
			if resp.StatusCode != 200 || resp.ProtoMajor != pc.proto {
				t.Fatalf("status %d over HTTP/%d, want 200 over HTTP/%d", resp.StatusCode, resp.ProtoMajor, pc.proto)
			}
			var seen http.Header
			if err := json.Unmarshal([]byte(body), &seen); err != nil {
				t.Fatalf("backend answer %q: %v", body, err)
			}
			if xff := seen.Get("X-Forwarded-For"); xff != "127.0.0.1" {
				t.Errorf("X-Forwarded-For %q: want the peer alone, the client being no trusted proxy", xff)
			}
			if seen.Get("X-Forwarded-Proto") != "https" || seen.Get("X-Forwarded-Host") != n.Addrs().HTTPS {
				t.Errorf("X-Forwarded-Proto/Host: %q %q", seen.Get("X-Forwarded-Proto"), seen.Get("X-Forwarded-Host"))
			}
			tp := seen.Get("Traceparent")
			if !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || strings.Contains(tp, "00f067aa0ba902b7") {
				t.Errorf("traceparent %q: want the trace continued with a new parent", tp)
			}
			if id := resp.Header.Get("X-Request-Id"); id == "" || seen.Get("X-Request-Id") != id {
				t.Errorf("request id %q not sent upstream (%q)", id, seen.Get("X-Request-Id"))
			}
			wantVia := map[int]string{1: "1.1 local", 2: "2 local", 3: "3 local"}[pc.proto]
			if seen.Get("Via") != wantVia || resp.Header.Get("Via") != wantVia {
				t.Errorf("Via upstream %q, downstream %q; want %q", seen.Get("Via"), resp.Header.Get("Via"), wantVia)
			}
			if alt := resp.Header.Get("Alt-Svc"); pc.proto < 3 && !strings.HasPrefix(alt, `h3=":`) {
				t.Errorf("TCP response without an HTTP/3 Alt-Svc: %q", alt)
			}
		})
	}
}

func TestErrorStatusesAreJSONWithTheRequestID(t *testing.T) {
	slow := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	broken := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close() // hang up without an answer
	}))
	yaml := listenAny + `limits: {max_header_bytes: 4KiB, max_body_bytes: 1KiB}
timeouts: {response_header: 300ms}
services:
  slow: {backends: [{url: "` + slow + `"}]}
  broken: {backends: [{url: "` + broken + `"}], outlier: {consecutive_failures: 1000}}
  dead: {backends: [{url: "` + deadAddr(t) + `"}], health: {path: /healthz, interval: 50ms}, panic_threshold: 0}
  ok: {backends: [{url: "` + backend(t, "ok") + `"}]}
routes:
  - {match: {path_prefix: /slow}, service: slow}
  - {match: {path_prefix: /broken}, service: broken}
  - {match: {path_prefix: /dead}, service: dead}
  - {match: {path_prefix: /ok}, service: ok}
`
	n := startNode(t, yaml)
	base := "https://" + n.Addrs().HTTPS
	waitFor(t, "dead backend marked down", func() bool { return len(n.state.Load().services["dead"].Healthy()) == 0 })
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			check := func(want int, req *http.Request) {
				t.Helper()
				req.Header.Set("X-Request-Id", "rid-42")
				resp, err := pc.client.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
				}
				defer resp.Body.Close()
				var body struct {
					Status    int    `json:"status"`
					Error     string `json:"error"`
					RequestID string `json:"request_id"`
				}
				if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
					t.Fatalf("%s: body is not JSON: %v", req.URL.Path, err)
				}
				if resp.StatusCode != want || body.Status != want || body.RequestID != "rid-42" || body.Error == "" {
					t.Fatalf("%s: got %d %+v, want %d with the request id", req.URL.Path, resp.StatusCode, body, want)
				}
			}
			req := func(method, path string, body io.Reader) *http.Request {
				r, _ := http.NewRequest(method, base+path, body)
				return r
			}
			check(404, req("GET", "/nowhere", nil))
			big := req("GET", "/ok", nil)
			big.Header.Set("X-Big", strings.Repeat("x", 5000))
			check(431, big)
			check(413, req("POST", "/ok", strings.NewReader(strings.Repeat("x", 2000))))
			chunked := req("POST", "/ok", io.MultiReader(strings.NewReader(strings.Repeat("y", 3000))))
			chunked.ContentLength = -1
			check(413, chunked)
			check(503, req("GET", "/dead", nil))
			check(502, req("GET", "/broken", nil))
			check(504, req("GET", "/slow", nil))
		})
	}
}

func TestRetriesConnectFailuresOnAnotherBackend(t *testing.T) {
	alive := backend(t, "alive")
	// A GET is retried whichever protocol carried it: over HTTP/3 too,
	// where every request arrives with a body to read. Each protocol gets
	// a node of its own, whose dead backend no other one ejected.
	for _, pc := range allClients(t) {
		n := startNode(t, nodeYAML("round_robin", deadAddr(t), alive))
		for i := range 20 {
			resp, _ := get(t, pc.client, "https://"+n.Addrs().HTTPS+"/x")
			if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "alive" {
				t.Fatalf("%s request %d: %d from %q", pc.name, i, resp.StatusCode, resp.Header.Get("X-Backend"))
			}
		}
	}
	// A request whose body the dead backend never took is retried too, with
	// the whole body: a PUT, and a GET whose empty body was still to come
	// after its headers (over HTTP/2 and HTTP/3 a client may send it so).
	echo := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %q", r.Method, b)
	}))
	for _, pc := range allClients(t) {
		n := startNode(t, nodeYAML("round_robin", deadAddr(t), echo))
		for i := range 10 {
			for _, c := range []struct {
				method string
				body   io.Reader
				want   string
			}{
				{"PUT", strings.NewReader("payload"), `PUT "payload"`},
				{"GET", io.MultiReader(), `GET ""`},
			} {
				req, err := http.NewRequest(c.method, "https://"+n.Addrs().HTTPS+"/x", c.body)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := pc.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != c.want {
					t.Fatalf("%s %s %d: %d %q, want 200 %q", pc.name, c.method, i, resp.StatusCode, b, c.want)
				}
			}
		}
	}
	n := startNode(t, nodeYAML("round_robin", deadAddr(t), alive))
	c := h1Client()
	// A POST is not replayable: its failure shows rather than being retried.
	failed := 0
	for range 10 {
		resp, err := c.Post("https://"+n.Addrs().HTTPS+"/x", "text/plain", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 502 {
			failed++
		}
	}
	if failed == 0 && len(n.state.Load().services["api"].Healthy()) == 2 {
		t.Fatal("POSTs to a dead backend neither failed nor ejected it")
	}
}

func TestBalancersThroughTheNode(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	yaml := strings.Replace(nodeYAML("round_robin", a, b), `{url: "`+b+`"}`, `{url: "`+b+`", weight: 3}`, 1)
	n := startNode(t, yaml)
	got := map[string]int{}
	c := h2Client()
	for range 400 {
		resp, _ := get(t, c, "https://"+n.Addrs().HTTPS+"/")
		got[resp.Header.Get("X-Backend")]++
	}
	if got["a"] != 100 || got["b"] != 300 {
		t.Fatalf("weights 1:3 gave %v", got)
	}
	hashed := startNode(t, strings.Replace(nodeYAML("hash", a, b), "balancer: hash", "balancer: hash\n    hash: {header: X-User}", 1))
	for _, user := range []string{"ann", "bob", "cid", "dee"} {
		first := ""
		for range 10 {
			resp, _ := get(t, c, "https://"+hashed.Addrs().HTTPS+"/", "X-User", user)
			if first == "" {
				first = resp.Header.Get("X-Backend")
			} else if resp.Header.Get("X-Backend") != first {
				t.Fatalf("user %s moved between backends", user)
			}
		}
	}
}

func TestHealthEjectsAndRecoversThroughTheNode(t *testing.T) {
	var down atomic.Bool
	flaky := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(503)
			return
		}
		w.Header().Set("X-Backend", "flaky")
	}))
	yaml := strings.Replace(nodeYAML("round_robin", flaky, backend(t, "steady")), "routes:", "    health: {path: /healthz, interval: 30ms, rise: 2, fall: 2}\nroutes:", 1)
	n := startNode(t, yaml)
	svc := n.state.Load().services["api"]
	down.Store(true)
	waitFor(t, "flaky ejected by checks", func() bool { return len(svc.Healthy()) == 1 })
	c := h1Client()
	for range 10 {
		if resp, _ := get(t, c, "https://"+n.Addrs().HTTPS+"/"); resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "steady" {
			t.Fatalf("request served by %q with %d while flaky is down", resp.Header.Get("X-Backend"), resp.StatusCode)
		}
	}
	down.Store(false)
	waitFor(t, "flaky back after passing checks", func() bool { return len(svc.Healthy()) == 2 })
	var services []struct {
		Backends []struct {
			URL     string `json:"url"`
			Healthy bool   `json:"healthy"`
		} `json:"backends"`
	}
	resp, body := get(t, c, "http://"+n.Addrs().Admin+"/services")
	if err := json.Unmarshal([]byte(body), &services); err != nil || resp.StatusCode != 200 || len(services[0].Backends) != 2 {
		t.Fatalf("GET /services: %d %s", resp.StatusCode, body)
	}
}

func TestLargeUploadIsStreamedNotHeld(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", backend(t, "sink")))
	const size = 1 << 30
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	resp, err := http.Post("http://"+n.Addrs().HTTP+"/upload", "application/octet-stream", io.LimitReader(zeros{}, size))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct{ Received int64 }
	json.NewDecoder(resp.Body).Decode(&got)
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if resp.StatusCode != 200 || got.Received != size {
		t.Fatalf("upload: %d, backend received %d of %d bytes", resp.StatusCode, got.Received, size)
	}
	// Holding the body would allocate at least its size; streaming through
	// pooled buffers allocates a small fraction of it.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/8 {
		t.Fatalf("a 1 GiB upload allocated %d MiB in this process", alloc>>20)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestWebSocketUpgradeOverHTTP1(t *testing.T) {
	ws := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			w.WriteHeader(400)
			return
		}
		conn, rw, ok := acceptWebSocket(w)
		if !ok {
			return
		}
		defer conn.Close()
		line, _ := rw.ReadString('\n') // echo one line, as a frame stand-in
		rw.WriteString("echo: " + line)
		rw.Flush()
	}))
	n := startNode(t, nodeYAML("round_robin", ws))
	conn, br := dialWebSocket(t, n.Addrs().HTTPS, "/ws", 0)
	io.WriteString(conn, "ping\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || line != "echo: ping\n" {
		t.Fatalf("after upgrade got %q, %v", line, err)
	}
}

func TestReloadUnderLoadFailsNoRequestAndBadReloadKeepsServing(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	n := startNode(t, nodeYAML("round_robin", a))
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var stops []func()
	for _, pc := range allClients(t) {
		stops = append(stops, load(pc.client, "https://"+n.Addrs().HTTPS+"/x", 2, func(resp *http.Response, err error) {
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, pc.name+": "+errOrStatus(err, resp))
			} else {
				ok.Add(1)
			}
		}))
	}
	for i := range 6 {
		time.Sleep(100 * time.Millisecond)
		next := []string{a, b}[i%2]
		n.rewrite(nodeYAML("least_request", next))
		if err := n.Reload(); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
	}
	bad := nodeYAML("round_robin", a) + "bogus_key: 1\n"
	n.rewrite(bad)
	err := n.Reload()
	time.Sleep(100 * time.Millisecond)
	for _, stop := range stops {
		stop()
	}
	if want := fmt.Sprintf(`node.yaml:%d: unknown key "bogus_key"`, strings.Count(bad, "\n")); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("bad reload error %v should name file:line", err)
	}
	if failed.Load() > 0 || ok.Load() == 0 {
		t.Fatalf("%d requests failed during reloads (first: %v), %d succeeded", failed.Load(), firstErr.Load(), ok.Load())
	}
	resp, body := get(t, h1Client(), "http://"+n.Addrs().Admin+"/status")
	if resp.StatusCode != 200 || !strings.Contains(body, "unknown key") {
		t.Fatalf("status does not report the refused reload: %s", body)
	}
	// The admin endpoint refuses it too, and says the old config serves on.
	r, err := http.Post("http://"+n.Addrs().Admin+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 422 {
		t.Fatalf("POST /reload of a bad config: %d", r.StatusCode)
	}
	if resp, _ := get(t, h1Client(), "https://"+n.Addrs().HTTPS+"/x"); resp.StatusCode != 200 {
		t.Fatal("old config stopped serving after a bad reload")
	}
}

// load runs workers sending GETs to url until the returned stop is called;
// each outcome goes to seen, when given.
func load(c *http.Client, url string, workers int, seen func(*http.Response, error)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				resp, err := c.Get(url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if seen != nil {
					seen(resp, err)
				}
			}
		}()
	}
	return func() { close(done); wg.Wait() }
}

func errOrStatus(err error, resp *http.Response) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

func TestGracefulShutdownDrainsRequestsInFlight(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 3)
	slow := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		io.WriteString(w, "done")
	}))
	n := startNode(t, nodeYAML("round_robin", slow))
	results := make(chan string, 3)
	for _, pc := range allClients(t) {
		go func() {
			resp, err := pc.client.Get("https://" + n.Addrs().HTTPS + "/slow")
			if err != nil {
				results <- pc.name + ": " + err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- pc.name + ": " + string(b)
		}()
	}
	for range 3 {
		<-started
	}
	shut := make(chan error, 1)
	go func() { shut <- n.Shutdown(t.Context()) }()
	time.Sleep(200 * time.Millisecond)
	if _, err := h1Client().Get("https://" + n.Addrs().HTTPS + "/new"); err == nil {
		t.Fatal("a new connection was accepted while draining")
	}
	close(release)
	for range 3 {
		if r := <-results; !strings.HasSuffix(r, ": done") {
			t.Fatalf("request in flight was cut: %s", r)
		}
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func TestAdminAPI(t *testing.T) {
	n := startNode(t, nodeYAML("ewma", backend(t, "a")))
	c := h1Client()
	get(t, c, "https://"+n.Addrs().HTTPS+"/warm")
	admin := "http://" + n.Addrs().Admin
	for path, want := range map[string]string{
		"/status":   `"spki_sha256"`,
		"/routes":   `"service": "api"`,
		"/services": `"ewma_latency_seconds"`,
		"/config":   `"balancer": "ewma"`,
		"/metrics":  `perigee_requests_total{code="200",proto="h1",route="api",service="api"} 1`,
		"/":         `<title>perigee`,
	} {
		resp, body := get(t, c, admin+path)
		if resp.StatusCode != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, missing %s in:\n%.600s", path, resp.StatusCode, want, body)
		}
	}
	_, metrics := get(t, c, admin+"/metrics")
	for _, want := range []string{`perigee_tls_handshakes_total{proto="h1"} 1`, `perigee_upstream_check_up{backend=`, `perigee_upstream_ejected{backend=`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("GET /metrics lacks %s", want)
		}
	}
	// One convention for every key an operator reads.
	for _, path := range []string{"/status", "/services", "/routes", "/transforms", "/policies", "/decisions"} {
		_, body := get(t, c, admin+path)
		var v any
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if bad := unconventionalKeys(v); len(bad) > 0 {
			t.Errorf("GET %s: keys not snake_case or durations in raw nanoseconds: %v", path, bad)
		}
		if path == "/status" && strings.Contains(body, "last_reload") {
			t.Errorf("GET /status shows a last_reload before any reload:\n%s", body)
		}
	}
	if resp, _ := get(t, c, admin+"/nope"); resp.StatusCode != 404 {
		t.Errorf("unknown admin path: %d", resp.StatusCode)
	}
}

// Clients that send too much, or leave mid-request, must not get healthy
// backends ejected, and an aborted response must not leave the in-flight
// count raised.
func TestClientFaultsDoNotHurtBackendsOrCounts(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	yaml := strings.Replace(nodeYAML("round_robin", a, b), "routes:", "    outlier: {consecutive_failures: 2}\nlimits: {max_body_bytes: 100}\nroutes:", 1)
	n := startNode(t, yaml)
	for range 6 {
		req, _ := http.NewRequest("POST", "http://"+n.Addrs().HTTP+"/up", io.MultiReader(strings.NewReader(strings.Repeat("x", 5000))))
		req.ContentLength = -1 // chunked: only reading it finds it too large
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Fatalf("got %d, want 413", resp.StatusCode)
		}
	}
	if h := len(n.state.Load().services["api"].Healthy()); h != 2 {
		t.Fatalf("%d of 2 backends healthy after clients sent oversized bodies", h)
	}

	// A backend that dies mid-body aborts the response by panic inside
	// net/http; the node's records must still be closed.
	dying := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		w.WriteHeader(200)
		w.Write([]byte("partial"))
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	}))
	m := startNode(t, nodeYAML("round_robin", dying))
	for range 3 {
		if resp, err := http.Get("http://" + m.Addrs().HTTP + "/"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	waitFor(t, "in-flight back to zero after aborted responses", func() bool { return m.metrics.InFlight() == 0 })
}

// GET /config shows no secret: not a transform's guest config, not a
// webhook's HMAC secret. Without a token the API answers only loopback Host
// names (DNS rebinding) and refuses cross-origin state changes.
func TestAdminRedactsSecretsAndRefusesRebinding(t *testing.T) {
	module := filepath.Join(t.TempDir(), "tck.wasm")
	writeFile(t, module, string(tck.GuestWASM))
	yaml := strings.Replace(nodeYAML("round_robin", backend(t, "a")), "    backends:",
		"    scale: {actuator: webhook, url: \"http://127.0.0.1:1/scale\", secret: hook-s3cret, min: 1, max: 2}\n    backends:", 1) +
		"transforms:\n  t: {module: \"" + module + "\", config: {keys: \"demo-k3y\", secret: jwt-s3cret}}\n"
	n := startNode(t, yaml)
	admin := "http://" + n.Addrs().Admin
	resp, body := get(t, http.DefaultClient, admin+"/config")
	for _, secret := range []string{"hook-s3cret", "demo-k3y", "jwt-s3cret"} {
		if resp.StatusCode != 200 || strings.Contains(body, secret) {
			t.Errorf("GET /config: %d, shows %q:\n%.2000s", resp.StatusCode, secret, body)
		}
	}
	if !strings.Contains(body, `"<redacted>"`) || !strings.Contains(body, `"round_robin"`) {
		t.Errorf("GET /config lost what it should show:\n%.2000s", body)
	}
	_, port, _ := strings.Cut(n.Addrs().Admin, ":")
	for host, want := range map[string]int{"127.0.0.1:" + port: 200, "localhost:" + port: 200, "[::1]:" + port: 200, "localhost": 200,
		"evil.example:" + port: 403, "127.0.0.1.evil.example": 403} {
		req, _ := http.NewRequest("GET", admin+"/status", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /status with Host %q: %d, want %d", host, resp.StatusCode, want)
		}
	}
	for origin, want := range map[string]int{"http://evil.example": 403, "null": 403, "http://" + n.Addrs().Admin: 200} {
		req, _ := http.NewRequest("POST", admin+"/reload", nil)
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST /reload from Origin %q: %d, want %d", origin, resp.StatusCode, want)
		}
	}
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// unconventionalKeys lists the JSON object keys in v that are not
// snake_case or that carry raw nanoseconds. Map keys that are names (a
// transform's, a service's) are values, so only struct-like keys are
// checked: a key is struct-like when it is made of lower-case words.
func unconventionalKeys(v any) []string {
	var bad []string
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if !snakeCase.MatchString(k) && !strings.ContainsAny(k, "-.:/") || strings.HasSuffix(k, "_ns") {
				bad = append(bad, k)
			}
			bad = append(bad, unconventionalKeys(e)...)
		}
	case []any:
		for _, e := range v {
			bad = append(bad, unconventionalKeys(e)...)
		}
	}
	return bad
}
