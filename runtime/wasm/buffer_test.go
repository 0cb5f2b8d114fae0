package wasm

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"perigee/units"
)

// streamed is what the buffering cases push through a transform.
const streamed = 256 << 20

// bufferGuest enables features (1 buffer request, 2 buffer response) and,
// with readBody, reads the request body to its end. Its handle_response
// is not empty, so a request holds its instance between the two calls.
func bufferGuest(t *testing.T, features int, readBody bool) []byte {
	read := ""
	if readBody {
		read = `(block $eof (loop $more
			(br_if $eof (i64.ne (i64.const 0) (i64.and
				(call $read_body (i32.const 0) (i32.const 0) (i32.const 65536)) (i64.const 0x100000000))))
			(br $more)))`
	}
	return wat(t, fmt.Sprintf(`(module
		(import "http_handler" "enable_features" (func $enable (param i32) (result i32)))
		(import "http_handler" "read_body" (func $read_body (param i32 i32 i32) (result i64)))
		(memory (export "memory") 1)
		(func (export "handle_request") (result i64)
			(drop (call $enable (i32.const %d)))
			%s
			(i64.const 1))
		(func (export "handle_response") (param i32 i32) (drop (local.get 1))))`, features, read))
}

// writeGuest writes 1 MiB eight times to the body of kind and then answers
// (next 0) or continues (next 1).
func writeGuest(t *testing.T, kind, next int) []byte {
	return wat(t, fmt.Sprintf(`(module
		(import "http_handler" "write_body" (func $write_body (param i32 i32 i32)))
		(memory (export "memory") 16)
		(func (export "handle_request") (result i64) (local $i i32)
			(loop $more
				(call $write_body (i32.const %d) (i32.const 0) (i32.const 0x100000))
				(local.set $i (i32.add (local.get $i) (i32.const 1)))
				(br_if $more (i32.lt_u (local.get $i) (i32.const 8))))
			(i64.const %d))
		(func (export "handle_response") (param i32 i32)))`, kind, next))
}

// allocated is the heap allocated so far by the whole process.
func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// heapSlack is what the heap may take across a bounded case: the 4 MiB
// buffer (twice over while it grows) and the copy buffers, far below the
// 256 MiB streamed.
const heapSlack = 48 << 20

// A 256 MiB upstream response through a transform that holds responses back
// stops at max_buffer with 502, instead of growing the heap by the body.
func TestResponseBufferIsBounded(t *testing.T) {
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "hold", Wasm: bufferGuest(t, 2, false), Settings: Settings{Pool: 1, Timeout: units.Duration(5 * time.Second)}})
	chunk := make([]byte, 32<<10)
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for sent := 0; sent < streamed; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	url := serve(t, NewChain(tr).Then(upstream))

	rss0, alloc0 := settledRSS(t), allocated()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	alloc := allocated() - alloc0
	rss1 := settledRSS(t)
	t.Logf("status %d, %d body bytes; heap allocated %d MiB; rss %d -> %d MiB", resp.StatusCode, n, alloc>>20, rss0>>20, rss1>>20)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
	if alloc > heapSlack {
		t.Errorf("heap allocated %d MiB streaming %d MiB, want under %d MiB", alloc>>20, streamed>>20, heapSlack>>20)
	}
	if s := tr.Stats(); s.Errors != 1 || s.Traps != 0 {
		t.Errorf("stats %+v, want one error and no trap", s)
	}
	// The instance was not broken by it: the next small response goes through.
	upstreamOK := serve(t, NewChain(tr).Then(echoBackend))
	if resp, body := get(t, upstreamOK); resp.StatusCode != 200 || body != "backend" {
		t.Errorf("after the overflow: %d %q", resp.StatusCode, body)
	}
}

// A 256 MiB request body through a transform that buffers requests (and
// reads them) stops at max_buffer with 413.
func TestRequestBufferIsBounded(t *testing.T) {
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "keep", Wasm: bufferGuest(t, 1, true), Settings: Settings{Pool: 1, Timeout: units.Duration(5 * time.Second)}})
	srv := httptest.NewServer(NewChain(tr).Then(echoBackend))
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rss0, alloc0 := settledRSS(t), allocated()
	go func() {
		fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", streamed)
		chunk := make([]byte, 32<<10)
		for sent := 0; sent < streamed; sent += len(chunk) {
			if _, err := conn.Write(chunk); err != nil {
				return // the server has answered and stopped reading
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	alloc := allocated() - alloc0
	t.Logf("status %d; heap allocated %d MiB; rss %d -> %d MiB", resp.StatusCode, alloc>>20, rss0>>20, settledRSS(t)>>20)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d, want 413", resp.StatusCode)
	}
	if alloc > heapSlack {
		t.Errorf("heap allocated %d MiB receiving %d MiB, want under %d MiB", alloc>>20, streamed>>20, heapSlack>>20)
	}
}

// What a guest writes itself is bounded too: a request body past
// max_buffer is 413, its own response past it 502, a held response it
// rewrites past it 502.
func TestWrittenBodiesAreBounded(t *testing.T) {
	h := newTestHost(t)
	cases := []struct {
		name       string
		kind, next int
		want       int
	}{
		{"request body", 0, 1, http.StatusRequestEntityTooLarge},
		{"own response", 1, 0, http.StatusBadGateway},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := loadT(t, h, Spec{Name: "write", Wasm: writeGuest(t, c.kind, c.next), Settings: Settings{Pool: 1, MaxBuffer: 4 << 20, Timeout: units.Duration(5 * time.Second)}})
			resp, _ := get(t, serve(t, NewChain(tr).Then(echoBackend)))
			if resp.StatusCode != c.want {
				t.Errorf("status %d, want %d", resp.StatusCode, c.want)
			}
			// Under the limit, the same guest's write goes through.
			tr = loadT(t, h, Spec{Name: "write", Wasm: writeGuest(t, c.kind, c.next), Settings: Settings{Pool: 1, MaxBuffer: 8 << 20, Timeout: units.Duration(5 * time.Second)}})
			if resp, _ := get(t, serve(t, NewChain(tr).Then(echoBackend))); resp.StatusCode != 200 {
				t.Errorf("at the limit: status %d, want 200", resp.StatusCode)
			}
		})
	}
}

// A guest adding headers without end (4096 of 64 KiB: 256 MiB, or eight
// million empty ones) is stopped
// once the headers it set pass max_buffer, with 500 and a heap that grew
// by about max_buffer, whichever header map it fills, through either ABI.
func TestGuestHeadersAreBounded(t *testing.T) {
	const flood = `(local $i i32)
		(memory.fill (i32.const 16) (i32.const 97) (i32.const 65536))
		(loop $more
			%s
			(local.set $i (i32.add (local.get $i) (i32.const 1)))
			(br_if $more (i32.lt_u (local.get $i) (i32.const %d))))`
	httpGuest := func(kind, next, n, size int) []byte {
		add := fmt.Sprintf(`(call $add (i32.const %d) (i32.const 0) (i32.const 3) (i32.const 16) (i32.const %d))`, kind, size)
		return wat(t, fmt.Sprintf(`(module
			(import "http_handler" "add_header_value" (func $add (param i32 i32 i32 i32 i32)))
			(memory (export "memory") 2)
			(data (i32.const 0) "x-f")
			(func (export "handle_request") (result i64) `+flood+` (i64.const %d))
			(func (export "handle_response") (param i32 i32)))`, add, n, next))
	}
	proxyGuest := func(function, name string) []byte {
		return wat(t, fmt.Sprintf(`(module
			(import "env" "%s" (func $add (param i32 i32 i32 i32 i32) (result i32)))
			(memory (export "memory") 2)
			(data (i32.const 0) "%s")
			(func (export "proxy_abi_version_0_2_1"))
			(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
			(func (export "proxy_on_context_create") (param i32 i32))
			(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) `+flood+` (i32.const 0)))`, function, name,
			fmt.Sprintf(`(drop (call $add (i32.const 0) (i32.const 0) (i32.const %d) (i32.const 16) (i32.const 65536)))`, len(name)), 4096))
	}
	// A method, URI or authority replaces the last, but each call copies
	// it: in one request 4096 URIs of 64 KiB allocated 288 MiB, as many
	// authorities 256 MiB.
	uriGuest := wat(t, fmt.Sprintf(`(module
		(import "http_handler" "set_uri" (func $set (param i32 i32)))
		(memory (export "memory") 2)
		(data (i32.const 15) "/")
		(func (export "handle_request") (result i64) `+flood+` (i64.const 1))
		(func (export "handle_response") (param i32 i32)))`, `(call $set (i32.const 15) (i32.const 65537))`, 4096))
	h := newTestHost(t)
	for _, c := range []struct {
		name string
		wasm []byte
	}{
		{"http-wasm request headers", httpGuest(kindRequest, 1, 4096, 65536)},
		{"http-wasm response headers", httpGuest(kindResponse, 0, 4096, 65536)},
		// Eight million empty values: each costs the host more than its bytes.
		{"http-wasm many empty values", httpGuest(kindResponse, 0, 1<<23, 0)},
		{"proxy-wasm request headers", proxyGuest("proxy_add_header_map_value", "x-f")},
		{"http-wasm URIs", uriGuest},
		{"proxy-wasm authorities", proxyGuest("proxy_replace_header_map_value", ":authority")},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := loadT(t, h, Spec{Name: "flood", Wasm: c.wasm, Settings: Settings{Pool: 1, MaxBuffer: 4 << 20, Timeout: units.Duration(10 * time.Second)}})
			url := serve(t, NewChain(tr).Then(echoBackend))
			runtime.GC()
			before := allocated()
			resp, err := http.Get(url)
			grown := allocated() - before
			if err != nil {
				t.Fatalf("request failed after the heap grew by %d MiB: %.200v", grown>>20, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "max_buffer") {
				t.Errorf("status %d %q, want 500 naming max_buffer", resp.StatusCode, body)
			}
			if grown > heapSlack {
				t.Errorf("heap grew by %d MiB for a 4 MiB max_buffer", grown>>20)
			}
			t.Logf("status %d, heap allocated %d MiB", resp.StatusCode, grown>>20)
		})
	}
}
