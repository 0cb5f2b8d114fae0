package wasm

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkChain measures what the host adds to a request, without the
// network: the probe guest (two calls, a few host functions each) against
// the bare handler. The figures that count are bench/wasm's.
func BenchmarkChain(b *testing.B) {
	probe := wat(b, "probe.wat")
	h := newTestHost(b)
	load := func(name string) *Transform {
		return loadT(b, h, Spec{Name: name, Wasm: probe, Config: []byte(name), Settings: Settings{Pool: 2}})
	}
	a, b2, c3 := load("a"), load("b"), load("c")
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	for _, c := range []struct {
		name    string
		handler http.Handler
	}{
		{"none", backend},
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
