package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"perigee/runtime/wasm"
)

// The same header set on the request and the response by an http-wasm
// transform (addheader) and by a proxy-wasm filter (pwaddheader), in process, without the
// network: what each ABI costs for the same work. The ratio is of the cost
// each adds over the bare handler.
//
//	go test ./bench/wasm -run '^$' -bench HeaderFilter -benchtime 2000x -count 3
func BenchmarkHeaderFilter(b *testing.B) {
	handlers := headerFilters(b)
	for _, name := range []string{"none", "http-wasm", "proxy-wasm"} {
		b.Run(name, func(b *testing.B) {
			h := handlers[name]
			b.ReportAllocs()
			for b.Loop() {
				serveOnce(b, h)
			}
		})
	}
}

// BenchmarkHeaderFilterRatio runs the three request by request, in turn, so
// that load changing on a shared machine hits them alike, and reports each
// one's median time per request and the proxy-wasm/http-wasm ratio of the
// median time each adds over the bare handler.
func BenchmarkHeaderFilterRatio(b *testing.B) {
	handlers := headerFilters(b)
	names := []string{"none", "http-wasm", "proxy-wasm"}
	var spent [3][]time.Duration
	for b.Loop() {
		for i, name := range names {
			start := time.Now()
			serveOnce(b, handlers[name])
			spent[i] = append(spent[i], time.Since(start))
		}
	}
	var median [3]float64
	for i, name := range names {
		slices.Sort(spent[i])
		median[i] = float64(spent[i][len(spent[i])/2].Nanoseconds())
		b.ReportMetric(median[i], name+"-ns/req")
	}
	b.ReportMetric((median[2]-median[0])/(median[1]-median[0]), "ratio")
}

func serveOnce(b *testing.B, h http.Handler) {
	r := httptest.NewRequest(http.MethodGet, "/pass", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK || w.Header().Get("x-seen") != "fra-1" || w.Header().Get("x-edge") != "fra-1" {
		b.Fatalf("got %d, x-edge %q upstream and %q back", w.Code, w.Header().Get("x-seen"), w.Header().Get("x-edge"))
	}
}

// headerFilters loads both filters, each setting x-edge: fra-1, and
// returns the handlers to compare.
func headerFilters(b *testing.B) map[string]http.Handler {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()
	modules := map[string]string{"http-wasm": "../../modules/addheader", "proxy-wasm": "pwaddheader"}
	host, err := wasm.NewHost(wasm.Options{CacheDir: filepath.Join(os.TempDir(), "perigee-bench-wasm-cache")})
	if err != nil {
		b.Fatal(err)
	}
	var specs []wasm.Spec
	for _, abi := range []string{"http-wasm", "proxy-wasm"} {
		out := filepath.Join(dir, abi+".wasm")
		if err := wasm.Build(ctx, modules[abi], out); err != nil {
			b.Fatal(err)
		}
		bin, err := os.ReadFile(out)
		if err != nil {
			b.Fatal(err)
		}
		specs = append(specs, wasm.Spec{Name: abi, Wasm: bin, Config: []byte("x-edge: fra-1"), Settings: wasm.Settings{ABI: abi, Pool: 1}})
	}
	set, err := host.LoadSet(ctx, specs, nil)
	if err != nil {
		b.Fatal(err)
	}
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-seen", r.Header.Get("x-edge"))
		io.WriteString(w, "ok")
	})
	handlers := map[string]http.Handler{"none": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("x-edge", "fra-1")
		w.Header().Set("x-edge", "fra-1")
		backend.ServeHTTP(w, r)
	})}
	for _, abi := range []string{"http-wasm", "proxy-wasm"} {
		chain, err := set.Chain(abi)
		if err != nil {
			b.Fatal(err)
		}
		handlers[abi] = chain.Then(backend)
	}
	return handlers
}
