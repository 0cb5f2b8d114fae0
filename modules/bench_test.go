//go:build !wasip1

package modules_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"perigee/runtime/wasm"

	"perigee/units"
)

// BenchmarkChain measures what Go guests cost a request in-process, without
// the network: none, addheader, and denylist, rewrite and addheader in a
// chain. bench/wasm has the figures over loopback.
func BenchmarkChain(b *testing.B) {
	load := func(name string, config any) *wasm.Transform {
		cfg, err := wasm.EncodeConfig(config, ".")
		if err != nil {
			b.Fatal(err)
		}
		tr, err := host.Load(context.Background(), wasm.Spec{Name: name, Wasm: build(b, name), Config: cfg, Settings: wasm.Settings{Pool: 2, Timeout: units.Duration(10 * time.Second)}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(tr.Release)
		return tr
	}
	tag := load("addheader", "x-edge: fra-1")
	deny := load("denylist", map[string]any{"countries": []any{"KP"}, "networks": []any{"203.0.113.0/24"}})
	rewrite := load("rewrite", []any{map[string]any{"from": "/api/v1/", "to": "/v1/"}})
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	for _, c := range []struct {
		name string
		h    http.Handler
	}{
		{"none", backend},
		{"addheader", wasm.NewChain(tag).Then(backend)},
		{"chain3", wasm.NewChain(deny, rewrite, tag).Then(backend)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodGet, "/api/v1/items", nil)
				r.Header.Set("x-perigee-country", "DE")
				c.h.ServeHTTP(httptest.NewRecorder(), r)
			}
		})
	}
}
