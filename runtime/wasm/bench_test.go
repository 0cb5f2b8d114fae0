package wasm

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"
)

// BenchmarkChain measures what the host adds to a request, without the
// network: stamp (one call, one host function) and the probe guest (two
// calls, a few host functions each) against the bare handler. The figures that count are bench/wasm's.
func BenchmarkChain(b *testing.B) {
	probe := wat(b, "probe.wat")
	h := newTestHost(b)
	load := func(name string) *Transform {
		return loadT(b, h, Spec{Name: name, Wasm: probe, Config: []byte(name), Settings: Settings{Pool: 2}})
	}
	a, b2, c3 := load("a"), load("b"), load("c")
	stamp := loadT(b, h, Spec{Name: "stamp", Wasm: wat(b, stampWat)})
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	for _, c := range []struct {
		name    string
		handler http.Handler
	}{
		{"none", backend},
		{"stamp", NewChain(stamp).Then(backend)},
		{"probe", NewChain(a).Then(backend)},
		{"probe3", NewChain(a, b2, c3).Then(backend)},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/pass", nil)
			b.ReportAllocs()
			for b.Loop() {
				r.Header = http.Header{}
				c.handler.ServeHTTP(httptest.NewRecorder(), r)
			}
		})
	}
}

// stampWat sets a response header on the way in and has nothing to do on
// the way out, like modules/wat's poweredby.
var stampWat = stampGuest("")

// stampGuest is a guest that sets the response header x-stamp: x-stamp in
// handle_request, and runs handleResponse (WAT instructions) in
// handle_response.
func stampGuest(handleResponse string) string {
	return fmt.Sprintf(`(module
  (import "http_handler" "set_header_value" (func $set (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-stamp")
  (func (export "handle_request") (result i64)
    (call $set (i32.const 1) (i32.const 0) (i32.const 7) (i32.const 0) (i32.const 7))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32) %s))`, handleResponse)
}

// BenchmarkChainUpstreamWait runs 64 requests at once through one
// transform of the default pool (4) in front of an upstream that takes
// 200 µs: a request that holds its instance while upstream works bounds
// the route at 4 requests in flight.
func BenchmarkChainUpstreamWait(b *testing.B) {
	h := newTestHost(b)
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(200 * time.Microsecond)
		w.WriteHeader(http.StatusNoContent)
	})
	for _, c := range []struct{ name, guest string }{{"stamp", stampWat}, {"probe", "probe.wat"}} {
		tr := loadT(b, h, Spec{Name: c.name, Wasm: wat(b, c.guest)})
		handler := NewChain(tr).Then(upstream)
		b.Run(c.name, func(b *testing.B) {
			b.SetParallelism(64 / runtime.GOMAXPROCS(0))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := httptest.NewRequest(http.MethodGet, "/pass", nil)
					w := httptest.NewRecorder()
					handler.ServeHTTP(w, r)
					if w.Code != http.StatusNoContent {
						b.Fatalf("status %d", w.Code)
					}
				}
			})
		})
	}
}
