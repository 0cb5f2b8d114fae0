package edge

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The isolation tests look for one class of defect: one client's request
// or response state reaching another's (pooled records, header maps and
// buffers reused while still referenced, the Wasm exchange or instance
// carrying one request's headers, body or status into the next, a cut
// response's bytes read as the next answer on a reused connection,
// repeated request or trace ids). Every request carries a token of its own
// in its path, a header and its body; the backend echoes them; every
// response, 1xx heads included, must carry its own token and no other.

// tokenRE finds any request's token in a response.
var tokenRE = regexp.MustCompile(`tk[0-9]+x[0-9]+z`)

// isolationBackend echoes the request's token, path, body, id and trace.
// The last path segment picks a behaviour: hint sends a 103 carrying the
// token first; slow sends the body in pieces; cut aborts mid-body; fail
// aborts before the head; early answers before reading the body.
func isolationBackend(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := r.Header.Get("X-Token")
		action := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		var body []byte
		if action != "early" {
			body, _ = io.ReadAll(r.Body)
		}
		switch action {
		case "fail":
			panic(http.ErrAbortHandler)
		case "hint":
			w.Header().Set("Link", "</"+tok+".css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Echo-Token", tok)
		h.Set("Echo-Id", r.Header.Get("X-Request-Id"))
		h.Set("Echo-Trace", r.Header.Get("Traceparent"))
		h.Set("Echo-Backend", name)
		out, _ := json.Marshal(map[string]string{
			"token": tok, "path": r.URL.Path, "body": string(body), "secret": tok,
			"id": r.Header.Get("X-Request-Id"),
		})
		switch action {
		case "slow", "cut":
			w.WriteHeader(http.StatusOK)
			half := len(out) / 2
			w.Write(out[:half])
			http.NewResponseController(w).Flush()
			time.Sleep(time.Millisecond)
			if action == "cut" {
				panic(http.ErrAbortHandler)
			}
			w.Write(out[half:])
		default:
			w.Write(out)
		}
	})
}

// serveH2CBackend serves h over HTTP/2 with prior knowledge.
func serveH2CBackend(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// isolationRoute is one kind of request the test sends.
type isolationRoute struct {
	name string
	// path gives the request path for a token and an action.
	path func(tok, action string) string
	// echoes: a 200 comes from the backend, which echoed the request.
	echoes bool
	// statuses a well-behaved node may answer besides 200 (the guest's
	// own answer, an upstream failure).
	others []int
	// post sends a body; bodyPrefix is what a transform puts before it.
	post       bool
	redacted   bool // the redact transform masks the echoed secret
	bodyPrefix func(body string) string
	headers    []string
	actions    []string
}

func isolationNode(t *testing.T) (*testNode, []isolationRoute) {
	dir := t.TempDir()
	api := serveBackend(t, isolationBackend("api"))
	h2c := serveH2CBackend(t, isolationBackend("h2c"))
	pw := buildProxyTest(t, dir)
	n := startNode(t, listenAny+`transforms:
  addheader: {module: "`+exampleModule(t, "addheader")+`", config: "X-Added: yes", pool: 2, timeout: 20s}
  redact: {module: "`+exampleModule(t, "redact")+`", config: {fields: [secret], mask: MASKED}, pool: 2, timeout: 20s}
  rewrite: {module: "`+exampleModule(t, "rewrite")+`", config: [{from: /rw/, to: /rewritten/}], pool: 2, timeout: 20s}
  apikey: {module: "`+exampleModule(t, "apikey")+`", config: {keys: "demo-key\n"}, pool: 2, timeout: 20s}
  pw: {module: "`+pw+`", abi: proxy-wasm, configuration: iso, pool: 2, timeout: 20s}
services:
  api: {backends: [{url: "`+api+`"}]}
  h2c: {protocol: h2c, backends: [{url: "`+h2c+`"}]}
  retry: {backends: [{url: "`+deadAddr(t)+`"}, {url: "`+api+`"}], retry: {attempts: 2, budget: 1}}
routes:
  - {match: {path_prefix: /plain/}, service: api}
  - {match: {path_prefix: /h2/}, service: h2c}
  - {match: {path_prefix: /retry/}, service: retry}
  - {match: {path_prefix: /hw/}, service: api, transforms: [addheader, redact]}
  - {match: {path_prefix: /rw/}, service: api, transforms: [rewrite, redact]}
  - {match: {path_prefix: /key/}, service: api, transforms: [apikey, addheader]}
  - {match: {path_prefix: /pw/}, service: api, transforms: [pw]}
  - {match: {path_prefix: /pwh2/}, service: h2c, transforms: [addheader, pw]}
  - {match: {path_prefix: /pause-body}, service: api, transforms: [pw]}
  - {match: {path_prefix: /deny}, service: api, transforms: [pw]}
`)
	under := func(prefix string) func(tok, action string) string {
		return func(tok, action string) string { return prefix + tok + "/" + action }
	}
	all := []string{"echo", "echo", "echo", "hint", "slow", "cut", "fail", "early"}
	upstreamFail := []int{http.StatusBadGateway}
	routes := []isolationRoute{
		{name: "plain", path: under("/plain/"), echoes: true, others: upstreamFail, actions: all},
		{name: "plain-post", path: under("/plain/"), echoes: true, others: upstreamFail, post: true, actions: all},
		{name: "h2c", path: under("/h2/"), echoes: true, others: upstreamFail, post: true, actions: all},
		{name: "retry", path: under("/retry/"), echoes: true, others: upstreamFail, actions: []string{"echo", "hint", "slow"}},
		{name: "http-wasm", path: under("/hw/"), echoes: true, redacted: true, others: upstreamFail, post: true, actions: all},
		{name: "http-wasm-rewrite", path: under("/rw/"), echoes: true, redacted: true, others: upstreamFail, actions: all},
		{name: "http-wasm-key", path: under("/key/"), echoes: true, others: upstreamFail, headers: []string{"X-Api-Key", "demo-key"}, actions: all},
		{name: "http-wasm-refused", path: under("/key/"), others: []int{http.StatusUnauthorized}, actions: []string{"echo"}},
		{name: "proxy-wasm", path: under("/pw/"), echoes: true, others: upstreamFail, post: true, actions: all},
		{name: "proxy-wasm-h2c", path: under("/pwh2/"), echoes: true, others: upstreamFail, post: true, actions: all},
		{name: "proxy-wasm-body", path: func(string, string) string { return "/pause-body" }, echoes: true, post: true,
			bodyPrefix: func(b string) string { return fmt.Sprintf("BODY(%d):%s", len(b), b) }, actions: []string{"echo"}},
		{name: "proxy-wasm-deny", path: func(string, string) string { return "/deny" }, others: []int{http.StatusForbidden}, actions: []string{"echo"}},
	}
	return n, routes
}

// ids records every request id and span id the node handed out.
type ids struct {
	mu   sync.Mutex
	seen map[string]string // id -> the token of the request it went to
}

func (s *ids) claim(id, tok string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prior, ok := s.seen[id]; ok {
		return prior
	}
	s.seen[id] = tok
	return ""
}

var tokens atomic.Uint64

func newToken(worker int) string { return fmt.Sprintf("tk%dx%dz", worker, tokens.Add(1)) }

// isolationCheck sends one request of route r and reports every sign of
// another request's state in the answer.
func isolationCheck(ctx context.Context, c *http.Client, base string, worker int, r isolationRoute, seen *ids) []string {
	tok := newToken(worker)
	action := r.actions[rand.IntN(len(r.actions))]
	method, body := http.MethodGet, ""
	if r.post {
		method, body = http.MethodPost, strings.Repeat("body-"+tok+";", 1+rand.IntN(400))
	}
	var rbody io.Reader
	if body != "" {
		rbody = strings.NewReader(body)
	}
	var hints []textproto.MIMEHeader
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, h)
		return nil
	}})
	req, err := http.NewRequestWithContext(ctx, method, base+r.path(tok, action), rbody)
	if err != nil {
		return []string{err.Error()}
	}
	req.Header.Set("X-Token", tok)
	for i := 0; i+1 < len(r.headers); i += 2 {
		req.Header.Set(r.headers[i], r.headers[i+1])
	}
	wantID := ""
	if rand.IntN(2) == 0 {
		wantID = "id-" + tok
		req.Header.Set("X-Request-Id", wantID)
	}
	wantTrace := ""
	if rand.IntN(2) == 0 {
		wantTrace = fmt.Sprintf("%032x", tokens.Add(1)+1<<60)
		req.Header.Set("Traceparent", "00-"+wantTrace+"-00f067aa0ba902b7-01")
	}
	resp, err := c.Do(req)
	if err != nil {
		if action == "cut" {
			return nil // the response was cut mid-body, as the backend's
		}
		return []string{fmt.Sprintf("%s %s %s: %v", r.name, action, tok, err)}
	}
	got, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	where := fmt.Sprintf("%s %s %s over %s: %d", r.name, action, tok, resp.Proto, resp.StatusCode)
	var bad []string
	report := func(format string, args ...any) { bad = append(bad, where+": "+fmt.Sprintf(format, args...)) }
	if rerr != nil && action != "cut" {
		report("reading the body: %v", rerr)
	}
	foreign := func(what, s string) {
		for _, m := range tokenRE.FindAllString(s, -1) {
			if m != tok {
				report("%s carries another request's token %s: %.200q", what, m, s)
			}
		}
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			foreign("header "+k, v)
		}
	}
	for _, h := range hints {
		for k, vs := range h {
			for _, v := range vs {
				foreign("1xx header "+k, v)
			}
		}
		if action != "hint" {
			report("a 1xx the backend did not send: %v", h)
		} else if !strings.Contains(h.Get("Link"), tok) {
			report("1xx without the request's token: %v", h)
		}
	}
	foreign("body", string(got))

	id := resp.Header.Get("X-Request-Id")
	switch {
	case id == "":
		report("no X-Request-Id")
	case wantID != "" && id != wantID:
		report("X-Request-Id %q, want the client's %q", id, wantID)
	case wantID == "":
		if prior := seen.claim(id, tok); prior != "" {
			report("X-Request-Id %q was given to %s too", id, prior)
		}
	}
	if len(resp.Header["X-Request-Id"]) > 1 {
		report("X-Request-Id twice: %q", resp.Header["X-Request-Id"])
	}

	if resp.StatusCode == http.StatusOK && r.echoes && rerr == nil {
		var echo map[string]string
		if err := json.Unmarshal(got, &echo); err != nil {
			report("not the backend's JSON: %v: %.200q", err, got)
			return bad
		}
		wantBody := body
		if action == "early" {
			wantBody = "" // the backend answered without reading it
		}
		if r.bodyPrefix != nil {
			wantBody = r.bodyPrefix(body)
		}
		if resp.Header.Get("Echo-Token") != tok || echo["token"] != tok || echo["body"] != wantBody || echo["id"] != id {
			report("echo token %q/%q, id %q (response %q), body %d bytes (want %d): not this request's",
				resp.Header.Get("Echo-Token"), echo["token"], echo["id"], id, len(echo["body"]), len(wantBody))
		}
		if r.path(tok, action) != "/pause-body" && !strings.Contains(echo["path"], tok) {
			report("backend saw path %q", echo["path"])
		}
		if r.redacted && echo["secret"] != "MASKED" {
			report("redact did not run on this response: secret %q", echo["secret"])
		}
		tp := resp.Header.Get("Echo-Trace")
		if len(tp) != 55 || wantTrace != "" && tp[3:35] != wantTrace {
			report("backend saw traceparent %q, want trace %q continued", tp, wantTrace)
		} else if prior := seen.claim("span-"+tp[36:52], tok); prior != "" {
			report("span id %s was given to %s too", tp[36:52], prior)
		}
		return bad
	}
	if resp.StatusCode != http.StatusOK && !contains(fmt.Sprint(r.others), fmt.Sprint(resp.StatusCode)) {
		report("unexpected status: %.200q", got)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && resp.StatusCode >= 400 {
		var e struct {
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal(got, &e) != nil || e.RequestID != id {
			report("error body's request_id is not the response's %q: %.200q", id, got)
		}
	}
	return bad
}

// aborter sends requests that it abandons: mid-upload, right after the
// head, mid-body. Their tokens must not show up anywhere else either.
func aborter(ctx context.Context, c *http.Client, base string, worker int, routes []isolationRoute) {
	for ctx.Err() == nil {
		r := routes[rand.IntN(len(routes))]
		tok := newToken(worker)
		rctx, cancel := context.WithCancel(ctx)
		var body io.Reader
		method := http.MethodGet
		if r.post {
			method = http.MethodPost
			// An upload that stops partway, then is abandoned.
			pr, pw := io.Pipe()
			go func() {
				pw.Write([]byte(strings.Repeat("body-"+tok+";", 50)))
				<-rctx.Done()
				pw.CloseWithError(rctx.Err())
			}()
			body = pr
		}
		req, _ := http.NewRequestWithContext(rctx, method, base+r.path(tok, "slow"), body)
		req.Header.Set("X-Token", tok)
		req.Header.Set("X-Request-Id", "id-"+tok)
		for i := 0; i+1 < len(r.headers); i += 2 {
			req.Header.Set(r.headers[i], r.headers[i+1])
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := c.Do(req); err == nil {
				resp.Body.Read(make([]byte, 1+rand.IntN(64)))
				resp.Body.Close()
			}
		}()
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		cancel()
		<-done
	}
}

// rawAborter speaks HTTP/1.1 by hand: a request whose body stops short,
// then the connection closes.
func rawAborter(ctx context.Context, addr string, worker int) {
	for ctx.Err() == nil {
		tok := newToken(worker)
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			continue
		}
		path := []string{"/plain/", "/hw/", "/pw/", "/h2/"}[rand.IntN(4)] + tok + "/echo"
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nX-Token: %s\r\nX-Request-Id: id-%s\r\nContent-Length: 100000\r\n\r\nbody-%s;", path, tok, tok, tok)
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		conn.Close()
	}
}

// Many clients over HTTP/1.1, HTTP/2 and HTTP/3 at once, on plain, http-wasm
// and proxy-wasm routes, with h1 and h2c backends, 1xx heads, upstream
// failures mid-head and mid-body, retries, guests that answer themselves,
// and clients that abandon requests at every stage: every answer carries
// its own token, id and trace, and nothing of any other request.
func TestConcurrentClientsSeeOnlyTheirOwnRequest(t *testing.T) {
	n, routes := isolationNode(t)
	base := "https://" + n.Addrs().HTTPS
	clients := allClients(t)
	seen := &ids{seen: map[string]string{}}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	var noise sync.WaitGroup
	for i, c := range clients {
		noise.Go(func() { aborter(ctx, c.client, base, 1000+i, routes) })
	}
	noise.Go(func() { rawAborter(ctx, n.Addrs().HTTPS, 2000) })

	const workersPerClient, perWorker = 3, 30
	var (
		mu       sync.Mutex
		bad      []string
		answered = map[string]int{}
	)
	var wg sync.WaitGroup
	for ci, c := range clients {
		for w := range workersPerClient {
			worker := ci*workersPerClient + w
			wg.Go(func() {
				for i := range perWorker {
					r := routes[(worker+i)%len(routes)]
					found := isolationCheck(context.Background(), c.client, base, worker, r, seen)
					mu.Lock()
					bad = append(bad, found...)
					if len(found) == 0 {
						answered[r.name]++
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	stop()
	noise.Wait()
	for i, b := range bad {
		if i == 200 {
			t.Errorf("... and %d more", len(bad)-i)
			break
		}
		t.Error(b)
	}
	for _, r := range routes {
		if answered[r.name] == 0 {
			t.Errorf("route %s: no request checked out; the test saw nothing", r.name)
		}
	}
}

// A transform's own answer (a proxy-wasm local response, which starts
// from an empty header map) still carries the request's id.
func TestTransformAnswersKeepTheRequestID(t *testing.T) {
	n, _ := isolationNode(t)
	for _, pc := range allClients(t) {
		for _, path := range []string{"/deny", "/key/tk1x1z/echo"} {
			resp, _ := get(t, pc.client, "https://"+n.Addrs().HTTPS+path, "X-Request-Id", "mine-1")
			if resp.StatusCode < 400 || resp.Header.Get("X-Request-Id") != "mine-1" {
				t.Errorf("%s %s: %d with X-Request-Id %q, want the guest's refusal with mine-1", pc.name, path, resp.StatusCode, resp.Header.Get("X-Request-Id"))
			}
			if pc.proto < 3 && resp.Header.Get("Alt-Svc") == "" {
				t.Errorf("%s %s: no Alt-Svc", pc.name, path)
			}
		}
	}
}

// A backend's 103 Early Hints goes to the client as an interim response
// through every kind of transform, and the final response keeps its own
// status and headers: a transform's writer took the 103 for the response
// head.
func TestEarlyHintsThroughTransforms(t *testing.T) {
	dir := t.TempDir()
	api := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("X-Final", "yes")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "final")
	}))
	n := startNode(t, listenAny+`transforms:
  redact: {module: "`+exampleModule(t, "redact")+`", config: {fields: [secret]}}
  addheader: {module: "`+exampleModule(t, "addheader")+`", config: "X-Added: yes"}
  pw: {module: "`+buildProxyTest(t, dir)+`", abi: proxy-wasm}
services:
  api: {backends: [{url: "`+api+`"}]}
routes:
  - {match: {path_prefix: /plain/}, service: api}
  - {match: {path_prefix: /held/}, service: api, transforms: [redact]}
  - {match: {path_prefix: /streamed/}, service: api, transforms: [addheader]}
  - {match: {path_prefix: /pw/}, service: api, transforms: [pw]}
`)
	for _, pc := range allClients(t) {
		for _, path := range []string{"/plain/", "/held/", "/streamed/", "/pw/"} {
			var hints []textproto.MIMEHeader
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				hints = append(hints, h)
				return nil
			}})
			req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+n.Addrs().HTTPS+path, nil)
			resp, err := pc.client.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", pc.name, path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-Final") != "yes" || string(body) != "final" || resp.Header.Get("X-Request-Id") == "" {
				t.Errorf("%s %s: %d, X-Final %q, X-Request-Id %q, %q; want the backend's 404 with its headers and the node's id",
					pc.name, path, resp.StatusCode, resp.Header.Get("X-Final"), resp.Header.Get("X-Request-Id"), body)
			}
			if len(hints) != 1 || hints[0].Get("Link") == "" || hints[0].Get("X-Final") != "" {
				t.Errorf("%s %s: interim heads %v, want one 103 with the Link and nothing of the final head", pc.name, path, hints)
			}
		}
	}
}
