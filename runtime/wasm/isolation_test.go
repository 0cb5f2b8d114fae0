package wasm

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"perigee/units"
)

// A transport may read a request's body on a goroutine of its own (the
// HTTP/2 one, net/http's), and go on reading it after the backend
// answered and the handler returned: ReverseProxy's Close does not stop a
// Read already under way. Through a proxy-wasm filter with a body
// callback, that late Read must not touch the request's exchange or
// instance, by then another request's: it ends the body instead.
func TestProxyWasmBodyReadAfterTheLayerReturned(t *testing.T) {
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "pw", Wasm: proxyTestGuest(t), Settings: Settings{ABI: ABIProxyWasm, Pool: 1, Timeout: units.Duration(5 * time.Second)}})
	late := make(chan error, 1)
	early := NewChain(tr).Then(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Late") == "" {
			io.Copy(w, r.Body)
			return
		}
		// What the transport's body goroutine does: a Read begun while
		// the backend answers, which returns after the handler did.
		body := r.Body
		started := make(chan struct{})
		go func() {
			defer func() {
				if p := recover(); p != nil {
					late <- fmt.Errorf("late Read panicked: %v", p)
				}
			}()
			close(started)
			_, err := body.Read(make([]byte, 64))
			late <- err
		}()
		<-started
		io.WriteString(w, "answered early")
	}))

	src, feed := io.Pipe()
	req := httptest.NewRequest("POST", "/early", src)
	req.Header.Set("X-Late", "1")
	rec := httptest.NewRecorder()
	early.ServeHTTP(rec, req)
	if rec.Body.String() != "answered early" {
		t.Fatalf("first request: %d %q", rec.Code, rec.Body)
	}

	// Another request takes the pooled exchange and the only instance,
	// and its body is being read when the first one's late Read wakes.
	next, nextFeed := io.Pipe()
	req2 := httptest.NewRequest("POST", "/second", next)
	rec2 := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { defer close(done); early.ServeHTTP(rec2, req2) }()
	nextFeed.Write([]byte("second's "))
	feed.Write([]byte("first's late bytes"))
	if err := <-late; err == nil || strings.Contains(err.Error(), "panicked") {
		t.Errorf("a Read after the layer returned: %v, want the body ended", err)
	}
	nextFeed.Write([]byte("body"))
	nextFeed.Close()
	<-done
	if rec2.Code != 200 || rec2.Body.String() != "second's body" {
		t.Errorf("second request: %d %q, want its own body back", rec2.Code, rec2.Body)
	}
}

// An interim 1xx head (103 Early Hints) from the rest of the chain goes to
// the client at once, through a transform that holds the response and
// through a proxy-wasm filter, and the response's own head follows with
// its own status and headers. Both writers took the 103 for the
// response's head: the client got the final headers on a 103, then a 200.
func TestInterimHeadsPassTransforms(t *testing.T) {
	h := newTestHost(t)
	hold := loadT(t, h, Spec{Name: "hold", Wasm: wat(t, `(module
  (import "http_handler" "enable_features" (func $enable (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle_request") (result i64) (drop (call $enable (i32.const 2))) (i64.const 1))
  (func (export "handle_response") (param i32 i32)))`)})
	pw := loadProxyTest(t, h, ABIProxyWasm)
	hinted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		delete(w.Header(), "Link")
		w.Header().Set("X-Final", "yes")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "final")
	})
	for _, c := range []struct {
		name  string
		chain *Chain
	}{{"buffered http-wasm", NewChain(hold)}, {"proxy-wasm", NewChain(pw)}} {
		name, chain := c.name, c.chain
		var hints []textproto.MIMEHeader
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, h)
			return nil
		}})
		req, _ := http.NewRequestWithContext(ctx, "GET", serve(t, chain.Then(hinted)), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-Final") != "yes" || string(body) != "final" {
			t.Errorf("%s: %d, X-Final %q, %q; want the 404 with its headers", name, resp.StatusCode, resp.Header.Get("X-Final"), body)
		}
		if len(hints) != 1 || hints[0].Get("Link") == "" || hints[0].Get("X-Final") != "" {
			t.Errorf("%s: interim heads %v, want one with the Link only", name, hints)
		}
	}
}

// A guest's status is the response's final one, which a 1xx cannot be: a
// guest answering 101 sent a bare "101 Switching Protocols" and the node
// went on serving the connection, which a proxy in front would take for a
// tunnel. http-wasm's set_status_code refuses it (500), proxy-wasm's
// :status gets BAD_ARGUMENT.
func TestGuestStatusCannotBeInterim(t *testing.T) {
	h := newTestHost(t)
	for _, code := range []int{100, 101, 103, 199} {
		answer := loadT(t, h, Spec{Name: "answer", Wasm: wat(t, fmt.Sprintf(`(module
			(import "http_handler" "set_status_code" (func $status (param i32)))
			(memory (export "memory") 1)
			(func (export "handle_request") (result i64) (call $status (i32.const %d)) (i64.const 0))
			(func (export "handle_response") (param i32 i32)))`, code)), Settings: Settings{Pool: 1}})
		if resp, _ := get(t, serve(t, NewChain(answer).Then(echoBackend))); resp.StatusCode != http.StatusInternalServerError {
			t.Errorf("http-wasm answering %d: client got %d, want 500", code, resp.StatusCode)
		}
	}
	pw := loadT(t, h, Spec{Name: "pw", Wasm: wat(t, `(module
		(import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
		(memory (export "memory") 1)
		(data (i32.const 0) ":status101")
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
		(func (export "proxy_on_context_create") (param i32 i32))
		(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
			(if (i32.ne (call $replace (i32.const 2) (i32.const 0) (i32.const 7) (i32.const 7) (i32.const 3)) (i32.const 2))
				(then unreachable)) ;; BAD_ARGUMENT
			(i32.const 0)))`), Settings: Settings{Pool: 1}})
	if resp, body := get(t, serve(t, NewChain(pw).Then(echoBackend))); resp.StatusCode != 200 || body != "backend" {
		t.Errorf("proxy-wasm :status 101: client got %d %q, want the upstream's 200", resp.StatusCode, body)
	}
}

// Header fields a guest sets are checked as proxy-wasm's are: a NUL in a
// value went onto the wire as is (to the client, and to a backend, where a
// C parser may cut the value there), a CR or LF in a name was dropped
// silently.
func TestGuestHeaderFieldsAreValid(t *testing.T) {
	h := newTestHost(t)
	for name, c := range map[string]struct {
		name, value       string // as WAT writes them
		nameLen, valueLen int
	}{
		"NUL in value":  {"x-a", `ok\00admin`, 3, 8},
		"CR in name":    {`x-a\0d`, "v", 4, 1},
		"colon in name": {"x-a:", "v", 4, 1},
		// What a transport refuses (net/http's, to an https:// backend)
		// or a client's parser would: the proxy took the refusal for
		// the backend failing.
		"control byte in value": {"x-a", `a\01b`, 3, 3},
		"DEL in value":          {"x-a", `a\7fb`, 3, 3},
		"separator in name":     {"x(a)", "v", 4, 1},
		"non-ASCII in name":     {`x-\c3\a9`, "v", 4, 1},
	} {
		g := wat(t, fmt.Sprintf(`(module
			(import "http_handler" "set_header_value" (func $set (param i32 i32 i32 i32 i32)))
			(memory (export "memory") 1)
			(data (i32.const 0) "%s")
			(data (i32.const 64) "%s")
			(func (export "handle_request") (result i64)
				(call $set (i32.const 1) (i32.const 0) (i32.const %d) (i32.const 64) (i32.const %d)) (i64.const 0))
			(func (export "handle_response") (param i32 i32)))`, c.name, c.value, c.nameLen, c.valueLen))
		tr := loadT(t, h, Spec{Name: "hdr", Wasm: g, Settings: Settings{Pool: 1}})
		resp, err := http.Get(serve(t, NewChain(tr).Then(echoBackend)))
		if err != nil {
			t.Errorf("%s: %.200v", name, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusInternalServerError {
			t.Errorf("%s: client got %d, want 500", name, resp.StatusCode)
		}
	}
}

// A method or host a guest sets is one the node's transports take: they
// refuse a method that is no token and a Host that is no host, and the
// proxy counted that refusal as the backend failing, so a guest that
// copies a client's header into either (a method override) let clients
// fail healthy backends. http-wasm traps, as for a bad header; proxy-wasm
// gets BAD_ARGUMENT and the request goes on unchanged.
func TestGuestRequestLineIsValid(t *testing.T) {
	h := newTestHost(t)
	var reached atomic.Int64
	var seen atomic.Value
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		seen.Store(r.Method + " " + r.Host)
	})
	for name, c := range map[string]struct {
		call  string // the import and its call, with the bytes at 0
		bytes string
	}{
		"method with a space": {`(import "http_handler" "set_method" (func $f (param i32 i32)))`, `(call $f (i32.const 0) (i32.const 5))|G E T`},
		"method with CR LF":   {`(import "http_handler" "set_method" (func $f (param i32 i32)))`, `(call $f (i32.const 0) (i32.const 9))|GET\0d\0aX: y`},
		"host with a space": {`(import "http_handler" "set_header_value" (func $f (param i32 i32 i32 i32 i32)))`,
			`(call $f (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 4) (i32.const 3))|hosta b`},
	} {
		call, data, _ := strings.Cut(c.bytes, "|")
		g := wat(t, `(module `+c.call+`
			(memory (export "memory") 1)
			(data (i32.const 0) "`+data+`")
			(func (export "handle_request") (result i64) `+call+` (i64.const 1))
			(func (export "handle_response") (param i32 i32)))`)
		tr := loadT(t, h, Spec{Name: "line", Wasm: g, Settings: Settings{Pool: 1}})
		reached.Store(0)
		if resp, _ := get(t, serve(t, NewChain(tr).Then(next))); resp.StatusCode != http.StatusInternalServerError || reached.Load() != 0 {
			t.Errorf("http-wasm, %s: %d, next reached %d times (saw %v); want 500 from the guest", name, resp.StatusCode, reached.Load(), seen.Load())
		}
	}

	// proxy-wasm: each replace must answer BAD_ARGUMENT (2), or the filter
	// traps; the request then goes on as the client sent it.
	pw := wat(t, `(module
		(import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
		(memory (export "memory") 1)
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
		(func (export "proxy_on_context_create") (param i32 i32))
		(data (i32.const 100) ":method")
		(data (i32.const 110) "G E T")
		(data (i32.const 120) ":authority")
		(data (i32.const 140) "evil\0d\0ax: y")
		(data (i32.const 160) "host")
		(data (i32.const 170) "a b")
		(func $bad (param i32 i32 i32 i32)
			(if (i32.ne (call $replace (i32.const 0) (local.get 0) (local.get 1) (local.get 2) (local.get 3)) (i32.const 2))
				(then unreachable)))
		(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
			(call $bad (i32.const 100) (i32.const 7) (i32.const 110) (i32.const 5))
			(call $bad (i32.const 120) (i32.const 10) (i32.const 140) (i32.const 10))
			(call $bad (i32.const 160) (i32.const 4) (i32.const 170) (i32.const 3))
			(i32.const 0)))`)
	tr := loadT(t, h, Spec{Name: "pw-line", Wasm: pw, Settings: Settings{Pool: 1}})
	url := serve(t, NewChain(tr).Then(next))
	seen.Store("")
	resp, _ := get(t, url)
	if want := "GET " + strings.TrimPrefix(url, "http://"); resp.StatusCode != 200 || seen.Load() != want {
		t.Errorf("proxy-wasm: %d, next saw %q; want 200 and %q", resp.StatusCode, seen.Load(), want)
	}
	// A dispatched call goes through the same transports.
	if _, err := callRequest([][2]string{{":authority", "a b"}}, nil); err == nil {
		t.Error("a call to authority \"a b\" was built, want it refused")
	}
}

// A trailer a guest sets is one a trailer may be (RFC 9110, 6.5.1; Go's
// httpguts.ValidTrailerHeader): net/http's transports refuse to send a
// request whose trailers name Content-Length, Transfer-Encoding or
// Trailer, and the proxy counted the refusal as the backend failing; a
// framing or routing field (Content-Length, Host) in a response's trailers
// is one an intermediary that merges trailers would take for the head's.
// http-wasm traps, proxy-wasm gets BAD_ARGUMENT, as for a bad header.
func TestGuestTrailersAreOnesTrailersMayBe(t *testing.T) {
	h := newTestHost(t)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	defer backend.Close()
	target, _ := url.Parse(backend.URL)
	upstream := httputil.NewSingleHostReverseProxy(target)
	upstream.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		t.Logf("the transport refused: %v", err)
		w.WriteHeader(http.StatusBadGateway)
	}
	for name, c := range map[string]struct {
		kind       int
		field      string
		nameLen    int
		wantStatus int
	}{
		"request trailer content-length":     {kindRequestTrailers, "content-length", 14, 500},
		"request trailer transfer-encoding":  {kindRequestTrailers, "transfer-encoding", 17, 500},
		"request trailer trailer":            {kindRequestTrailers, "trailer", 7, 500},
		"response trailer content-length":    {kindResponseTrailers, "content-length", 14, 500},
		"response trailer host":              {kindResponseTrailers, "host", 4, 500},
		"request trailer x-checksum (valid)": {kindRequestTrailers, "x-checksum", 10, 200},
	} {
		g := wat(t, fmt.Sprintf(`(module
			(import "http_handler" "set_header_value" (func $set (param i32 i32 i32 i32 i32)))
			(memory (export "memory") 1)
			(data (i32.const 0) "%s")
			(data (i32.const 64) "5")
			(func (export "handle_request") (result i64)
				(call $set (i32.const %d) (i32.const 0) (i32.const %d) (i32.const 64) (i32.const 1)) (i64.const 1))
			(func (export "handle_response") (param i32 i32)))`, c.field, c.kind, c.nameLen))
		tr := loadT(t, h, Spec{Name: "trailer", Wasm: g, Settings: Settings{Pool: 1}})
		resp, err := http.Post(serve(t, NewChain(tr).Then(upstream)), "text/plain", io.MultiReader(strings.NewReader("body"))) // chunked, as trailers come
		if err != nil {
			t.Errorf("http-wasm, %s: %v", name, err)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.wantStatus {
			t.Errorf("http-wasm, %s: client got %d, want %d", name, resp.StatusCode, c.wantStatus)
		}
	}

	// proxy-wasm: each add must answer BAD_ARGUMENT (2), or the filter
	// traps; the request then goes on as the client sent it.
	pw := wat(t, `(module
		(import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
		(memory (export "memory") 1)
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
		(func (export "proxy_on_context_create") (param i32 i32))
		(data (i32.const 100) "content-length")
		(data (i32.const 120) "transfer-encoding")
		(data (i32.const 140) "5")
		(func $bad (param i32 i32 i32)
			(if (i32.ne (call $add (local.get 0) (local.get 1) (local.get 2) (i32.const 140) (i32.const 1)) (i32.const 2))
				(then unreachable)))
		(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
			(call $bad (i32.const 1) (i32.const 100) (i32.const 14))
			(call $bad (i32.const 1) (i32.const 120) (i32.const 17))
			(i32.const 0))
		(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
			(call $bad (i32.const 3) (i32.const 100) (i32.const 14))
			(i32.const 0)))`)
	tr := loadT(t, h, Spec{Name: "pw-trailer", Wasm: pw, Settings: Settings{Pool: 1}})
	resp, err := http.Post(serve(t, NewChain(tr).Then(upstream)), "text/plain", io.MultiReader(strings.NewReader("body")))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("proxy-wasm: client got %d, want 200", resp.StatusCode)
	}
}

// A dispatched call's :path is a request target as a client's is: "x"
// went to the service as it was, which net/http's HTTP/2 transport
// refuses (invalid request :path), counted as the backend failing; and
// "//a/b" was read as a URL whose host is a, so the backend got "/b".
func TestDispatchedCallPathIsARequestTarget(t *testing.T) {
	for _, path := range []string{"x", "?q", "a/b"} {
		if _, err := callRequest([][2]string{{":path", path}, {":authority", "svc"}}, nil); err == nil {
			t.Errorf("a call to :path %q was built, want it refused", path)
		}
	}
	for path, want := range map[string]string{"//a/b": "//a/b", "/a?q=1": "/a?q=1", "*": "*", "/a b": "/a%20b"} {
		req, err := callRequest([][2]string{{":path", path}, {":authority", "svc"}}, nil)
		if err != nil {
			t.Errorf(":path %q: %v", path, err)
			continue
		}
		if got := req.URL.RequestURI(); got != want {
			t.Errorf(":path %q goes as %q, want %q", path, got, want)
		}
	}
}

// The host frames the response: it sets Content-Length wherever a guest
// may change the body (a held response, its own, a filter's with a body
// callback). A Content-Length a guest set on the response head went out
// beside the backend's, which the proxy adds: "Content-Length: 5" and
// "Content-Length: 7" on one HTTP/1.1 response, which an intermediary in
// front may frame by either (RFC 9112, 6.3: a recipient must not); a
// Transfer-Encoding went out beside net/http's chunked. http-wasm traps,
// proxy-wasm gets BAD_ARGUMENT; removing them stays allowed.
func TestGuestCannotFrameTheResponse(t *testing.T) {
	h := newTestHost(t)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "backend") }))
	defer backend.Close()
	target, _ := url.Parse(backend.URL)
	upstream := httputil.NewSingleHostReverseProxy(target)
	// head sends one HTTP/1.1 request and returns the response's head.
	head := func(url string) string {
		conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(conn)
		h, _, _ := strings.Cut(string(b), "\r\n\r\n")
		return h
	}
	for _, name := range []string{"content-length", "transfer-encoding"} {
		g := wat(t, fmt.Sprintf(`(module
			(import "http_handler" "add_header_value" (func $add (param i32 i32 i32 i32 i32)))
			(memory (export "memory") 1)
			(data (i32.const 0) "%s")
			(data (i32.const 64) "5")
			(func (export "handle_request") (result i64)
				(call $add (i32.const 1) (i32.const 0) (i32.const %d) (i32.const 64) (i32.const 1)) (i64.const 1))
			(func (export "handle_response") (param i32 i32)))`, name, len(name)))
		tr := loadT(t, h, Spec{Name: "frame", Wasm: g, Settings: Settings{Pool: 1}})
		if got := head(serve(t, NewChain(tr).Then(upstream))); !strings.HasPrefix(got, "HTTP/1.1 500") {
			t.Errorf("http-wasm, %s: the client got\n%s\nwant a 500 from the guest", name, got)
		}
	}

	pw := wat(t, `(module
		(import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
		(import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
		(memory (export "memory") 1)
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
		(func (export "proxy_on_context_create") (param i32 i32))
		(data (i32.const 100) "content-length")
		(data (i32.const 120) "transfer-encoding")
		(data (i32.const 140) "5")
		(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
			(if (i32.ne (call $add (i32.const 2) (i32.const 100) (i32.const 14) (i32.const 140) (i32.const 1)) (i32.const 2))
				(then unreachable))
			(if (i32.ne (call $add (i32.const 2) (i32.const 120) (i32.const 17) (i32.const 140) (i32.const 1)) (i32.const 2))
				(then unreachable))
			(if (call $remove (i32.const 2) (i32.const 100) (i32.const 14)) (then unreachable))
			(i32.const 0)))`)
	tr := loadT(t, h, Spec{Name: "pw-frame", Wasm: pw, Settings: Settings{Pool: 1}})
	if got := head(serve(t, NewChain(tr).Then(upstream))); !strings.HasPrefix(got, "HTTP/1.1 200") || strings.Count(strings.ToLower(got), "content-length") > 1 {
		t.Errorf("proxy-wasm: the client got\n%s\nwant a 200 with one Content-Length at most", got)
	}
}
