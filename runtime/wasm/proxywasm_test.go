package wasm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"perigee/memtest"
	"perigee/units"
)

var (
	proxyGuestOnce sync.Once
	proxyGuestWasm []byte
	proxyGuestErr  error
)

// proxyTestGuest builds modules/proxytest, the raw-import proxy-wasm filter,
// once per test binary.
func proxyTestGuest(t testing.TB) []byte {
	t.Helper()
	proxyGuestOnce.Do(func() {
		out := filepath.Join(os.TempDir(), "perigee-proxytest.wasm")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", out, "../../modules/proxytest")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if b, err := cmd.CombinedOutput(); err != nil {
			proxyGuestErr = err
			t.Logf("%s", b)
			return
		}
		proxyGuestWasm, proxyGuestErr = os.ReadFile(out)
	})
	if proxyGuestErr != nil {
		t.Fatalf("build modules/proxytest: %v", proxyGuestErr)
	}
	return proxyGuestWasm
}

// headerEcho answers with the request headers and body it received.
var headerEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	for _, k := range []string{"X-Pw-Config", "X-Pw-Pairs", "X-Pw-Props", "X-Replace", "X-Remove", "X-Chain"} {
		w.Header()["Seen-"+k] = r.Header.Values(k)
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write(body)
})

func loadProxyTest(t *testing.T, h *Host, abi string) *Transform {
	return loadT(t, h, Spec{Name: "pw", Wasm: proxyTestGuest(t), Config: []byte("edge-config"), Settings: Settings{ABI: abi, Pool: 2, Timeout: units.Duration(5 * time.Second)}})
}

func TestProxyWasmHeadersPropertiesAndDetection(t *testing.T) {
	h := newTestHost(t)
	h.node = Node{ID: "fra-1", Region: "eu"}
	tr := loadProxyTest(t, h, "") // detected from proxy_abi_version_0_2_1
	if tr.abi != ABIProxyWasm {
		t.Fatalf("abi %q, want detected proxy-wasm", tr.abi)
	}
	url := serve(t, NewChain(tr).Then(headerEcho))
	req, _ := http.NewRequest("GET", url+"/x?q=1", nil)
	req.Header.Set("X-Replace", "original")
	req.Header.Set("X-Remove", "gone")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := map[string]string{
		"Seen-X-Pw-Config": "edge-config",
		"Seen-X-Pw-Props":  "pw|GET|HTTP/1.1|fra-1|eu",
		"Seen-X-Replace":   "replaced",
		"Seen-X-Remove":    "",
		"X-Pw-Status":      "200",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if p := resp.Header.Get("Seen-X-Pw-Pairs"); !strings.HasPrefix(p, ":authority;:method;:path;:scheme;") || !strings.Contains(p, "x-remove;") {
		t.Errorf("pairs %q, want the pseudo-headers first, then the headers", p)
	}
}

func TestProxyWasmLocalResponse(t *testing.T) {
	h := newTestHost(t)
	tr := loadProxyTest(t, h, ABIProxyWasm)
	reached := false
	url := serve(t, NewChain(tr).Then(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true })))
	resp, body := get(t, url+"/deny")
	if resp.StatusCode != 403 || body != "denied by proxytest\n" || resp.Header.Get("X-Denied") != "yes" || reached {
		t.Errorf("got %d %q %v, upstream reached %v; want 403 from the filter", resp.StatusCode, body, resp.Header, reached)
	}
	if s := tr.Stats(); s.Answered != 1 {
		t.Errorf("stats %+v, want one answered", s)
	}
}

// The filter pauses the headers and every chunk of a body sent in pieces,
// then continues at the end of the stream with the whole body rewritten.
func TestProxyWasmPausedThenContinuedBody(t *testing.T) {
	h := newTestHost(t)
	tr := loadProxyTest(t, h, ABIProxyWasm)
	url := serve(t, NewChain(tr).Then(headerEcho))
	body, send := io.Pipe()
	go func() {
		for _, part := range []string{"one ", "two ", "three"} {
			send.Write([]byte(part))
			time.Sleep(10 * time.Millisecond)
		}
		send.Close()
	}()
	resp, err := http.Post(url+"/pause-body", "text/plain", body)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "BODY(13):one two three" {
		t.Errorf("upstream got %q, want the whole body behind the filter's prefix", got)
	}
}

// A chain of an http-wasm guest and a proxy-wasm filter: both run, in
// order.
func TestMixedChain(t *testing.T) {
	h := newTestHost(t)
	pw := loadProxyTest(t, h, "")
	hw := loadT(t, h, Spec{Name: "hw", Wasm: wat(t, "probe.wat"), Config: []byte("hw"), Settings: Settings{Pool: 1}})
	url := serve(t, NewChain(hw, pw).Then(headerEcho))
	resp, _ := get(t, url+"/mixed")
	if resp.Header.Get("Seen-X-Chain") != "hw" || resp.Header.Get("Seen-X-Pw-Config") != "edge-config" {
		t.Errorf("headers %v, want both transforms' marks", resp.Header)
	}
}

func TestProxyWasmLoadErrors(t *testing.T) {
	h := newTestHost(t)
	cases := map[string]struct {
		spec Spec
		want string
	}{
		"unsupported import": {Spec{Name: "x", Wasm: wat(t, `(module
			(import "env" "proxy_grpc_call" (func (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
			(memory (export "memory") 1)
			(func (export "proxy_abi_version_0_2_1"))
			(func (export "malloc") (param i32) (result i32) (i32.const 0))
			(func (export "proxy_on_context_create") (param i32 i32)))`), Settings: Settings{ABI: ABIProxyWasm}}, "env.proxy_grpc_call, which the host does not offer"},
		"http-wasm guest as proxy-wasm": {Spec{Name: "x", Wasm: wat(t, "probe.wat"), Settings: Settings{ABI: ABIProxyWasm}}, "not a proxy-wasm 0.2 module"},
		"unknown abi":                   {Spec{Name: "x", Wasm: []byte("\x00asm"), Settings: Settings{ABI: "wasi-http"}}, `unknown abi "wasi-http"`},
		// A filter that refuses says so, with no "<nil>" for the error it
		// did not have.
		"vm_start returns false": {Spec{Name: "x", Wasm: metricsWAT(t, [2]string{}, "(i32.const 0)"), Settings: Settings{ABI: ABIProxyWasm}},
			"proxy_on_vm_start returned false"},
	}
	for name, c := range cases {
		_, err := h.Load(context.Background(), c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "<nil>") {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestPairsRoundTripAndMalformed(t *testing.T) {
	in := [][2]string{{"a", "1"}, {"b", "22"}, {"", ""}}
	out, err := decodePairs(encodePairs(in))
	if err != nil || len(out) != 3 || out[1] != in[1] {
		t.Fatalf("round trip: %v, %v", out, err)
	}
	// The spec's example, byte for byte.
	spec := []byte{2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 'a', 0, '1', 0, 'b', 0, '2', '2', 0}
	if got := encodePairs([][2]string{{"a", "1"}, {"b", "22"}}); string(got) != string(spec) {
		t.Errorf("encode %v, want %v", got, spec)
	}
	for _, bad := range [][]byte{{1, 0}, {0xff, 0xff, 0xff, 0xff}, {1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 'a', 0}, spec[:len(spec)-1]} {
		if _, err := decodePairs(bad); err == nil {
			t.Errorf("decodePairs(%v) accepted", bad)
		}
	}
}

// testDispatcher sends calls to one server per service.
type testDispatcher map[string]string

func (d testDispatcher) Dispatch(ctx context.Context, service string, req *http.Request) (*http.Response, error) {
	u, err := url.Parse(d[service] + req.URL.RequestURI())
	if err != nil {
		return nil, err
	}
	req.URL = u
	return http.DefaultTransport.RoundTrip(req)
}

// The filter pauses the request for a dispatched call to the authz
// cluster; the call's callback resumes it with what authz answered, or
// answers 401 itself.
func TestProxyWasmDispatchedCallPausesAndResumes(t *testing.T) {
	allow, empty := true, false
	authz := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/check" || r.Header.Get("X-Asked-By") != "proxytest" || !allow {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		if !empty {
			io.WriteString(w, "user-7")
		}
	}))
	h := newTestHost(t)
	h.dispatcher = testDispatcher{"auth-svc": authz}
	tr := loadT(t, h, Spec{Name: "pw", Wasm: proxyTestGuest(t), Settings: Settings{Clusters: map[string]string{"authz": "auth-svc"}, Pool: 1, Timeout: units.Duration(5 * time.Second)}})
	var seen string
	url := serve(t, NewChain(tr).Then(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.Header.Get("X-Auth") })))
	if resp, _ := get(t, url+"/auth"); resp.StatusCode != 200 || seen != "user-7" {
		t.Errorf("allowed: %d, upstream saw x-auth %q; want 200 and user-7", resp.StatusCode, seen)
	}
	// An empty body is there, of no bytes: OK, as in Envoy.
	empty, seen = true, ""
	if resp, _ := get(t, url+"/auth"); resp.StatusCode != 200 || seen != "<empty:0>" {
		t.Errorf("empty answer: %d, upstream saw x-auth %q; want 200 and <empty:0>", resp.StatusCode, seen)
	}
	empty, allow, seen = false, false, ""
	if resp, body := get(t, url+"/auth"); resp.StatusCode != 401 || body != "no entry: authz said 403\n" || seen != "" {
		t.Errorf("refused: %d %q, upstream saw %q; want the filter's 401", resp.StatusCode, body, seen)
	}
	// A cluster the transform does not map is refused: the filter goes on.
	tr2 := loadT(t, h, Spec{Name: "pw2", Wasm: proxyTestGuest(t), Settings: Settings{Pool: 1, Timeout: units.Duration(5 * time.Second)}})
	url2 := serve(t, NewChain(tr2).Then(echoBackend))
	if resp, _ := get(t, url2+"/auth"); resp.StatusCode != 200 {
		t.Errorf("unmapped cluster: %d, want the request to go on", resp.StatusCode)
	}
}

// Shared data with CAS, a shared queue and the three metric types, as the
// filter sees them; and the metrics as Prometheus series.
func TestProxyWasmSharedDataQueuesAndMetrics(t *testing.T) {
	h := newTestHost(t)
	reg := prometheus.NewRegistry()
	if err := reg.Register(h.metrics); err != nil {
		t.Fatal(err)
	}
	tr := loadProxyTest(t, h, "")
	_, body := get(t, serve(t, NewChain(tr).Then(echoBackend))+"/shared")
	want := "missing=1 mismatch=8 set=0 value=v2 resolved=true item=item empty=7 counter=5 negative=2 gauge=5 histogram_get=2"
	if body != want {
		t.Errorf("filter saw\n %s\nwant\n %s", body, want)
	}
	if v := gathered(t, reg, "perigee_wasm_shared_calls", "pw"); v != 5 {
		t.Errorf("perigee_wasm_shared_calls{transform=pw} = %v, want 5", v)
	}
	// Queues are named within the filter's vm_id, which it resolves them by.
	recv := loadT(t, h, Spec{Name: "recv", Wasm: proxyTestGuest(t), Settings: Settings{VMID: "receiver", Pool: 1}})
	if _, body := get(t, serve(t, NewChain(recv).Then(echoBackend))+"/shared"); !strings.Contains(body, "resolved=true") {
		t.Errorf("vm_id receiver: filter saw %s, want its queue resolved as receiver's", body)
	}
	h.shared.mu.Lock()
	_, ok := h.shared.queues["receiver\x00q"]
	h.shared.mu.Unlock()
	if !ok {
		t.Errorf("queues %v, want q registered under receiver", h.shared.queues)
	}
}

// A filter that sets a tick period in proxy_on_configure ticks; its ticks
// enqueue, and proxy_on_queue_ready drains the queue.
func TestProxyWasmTicksAndQueueReady(t *testing.T) {
	h := newTestHost(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.metrics)
	tr, err := h.Load(context.Background(), Spec{Name: "ticker", Wasm: proxyTestGuest(t), Config: []byte("tick"), Settings: Settings{Pool: 1}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for gathered(t, reg, "perigee_wasm_ticks", "ticker") < 3 || gathered(t, reg, "perigee_wasm_queue_ready", "ticker") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("ticks %v, queue_ready %v after 20s", gathered(t, reg, "perigee_wasm_ticks", "ticker"), gathered(t, reg, "perigee_wasm_queue_ready", "ticker"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Releasing the transform stops its ticker.
	tr.Release()
	n := gathered(t, reg, "perigee_wasm_ticks", "ticker")
	time.Sleep(100 * time.Millisecond)
	if m := gathered(t, reg, "perigee_wasm_ticks", "ticker"); m != n {
		t.Errorf("ticked %v times after release", m-n)
	}
}

func gathered(t *testing.T, reg *prometheus.Registry, name, transform string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "transform" && l.GetValue() == transform {
					return m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// Request and response trailers reach the filter; it answers with a
// response trailer made of both.
func TestProxyWasmTrailers(t *testing.T) {
	h := newTestHost(t)
	// One instance, so that the second request below meets the first's.
	tr := loadT(t, h, Spec{Name: "pw", Wasm: proxyTestGuest(t), Settings: Settings{Pool: 1, Timeout: units.Duration(5 * time.Second)}})
	url := serve(t, NewChain(tr).Then(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Up-Trailer")
		io.WriteString(w, "body")
		w.Header().Set("X-Up-Trailer", "t-up")
	})))
	req, _ := http.NewRequest("POST", url+"/trailers", io.MultiReader(strings.NewReader("chunked")))
	req.Trailer = http.Header{"X-Req-Trailer": {"t-req"}}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := resp.Trailer.Get("X-Pw-Trailer"); got != "t-req+t-up" {
		t.Errorf("x-pw-trailer %q, want t-req+t-up (trailers %v)", got, resp.Trailer)
	}
	// The next request, on the same instance, sends none: nothing of the
	// last one's may reach it.
	req, _ = http.NewRequest("POST", url+"/trailers", io.MultiReader(strings.NewReader("chunked")))
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := resp.Trailer.Get("X-Pw-Trailer"); got != "+t-up" {
		t.Errorf("second request: x-pw-trailer %q, want +t-up", got)
	}
}

// proxyWAT wraps a proxy-wasm module body with the exports every filter
// needs; alloc is the body of proxy_on_memory_allocate.
func proxyWAT(t *testing.T, alloc, body string) []byte {
	return wat(t, `(module
		(import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
		(memory (export "memory") 1)
		(data (i32.const 0) ":path")
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) `+alloc+`)
		(func (export "proxy_on_context_create") (param i32 i32))
		`+body+`)`)
}

// Hostile filters are bounded as http-wasm guests are: a callback that
// never returns is stopped at its deadline; an allocator that hands out
// memory the guest does not have gets INVALID_MEMORY_ACCESS, not a crash.
func TestHostileProxyWasmFilters(t *testing.T) {
	h := newTestHost(t)
	loop := loadT(t, h, Spec{Name: "loop", Wasm: proxyWAT(t, "(i32.const 1024)",
		`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (loop $l (br $l)) (i32.const 0))`), Settings: Settings{Pool: 1, Timeout: units.Duration(hostileDeadline)}})
	start := time.Now()
	resp, _ := get(t, serve(t, NewChain(loop).Then(echoBackend)))
	if elapsed := time.Since(start); resp.StatusCode != 500 || elapsed > 2*hostileDeadline {
		t.Errorf("endless callback: %d after %v, want 500 within %v", resp.StatusCode, elapsed, 2*hostileDeadline)
	}
	if s := loop.Stats(); s.Timeouts != 1 {
		t.Errorf("stats %+v, want one timeout", s)
	}
	waitReplaced(t, loop, 1)

	// The allocator returns an address past the end of memory; the filter
	// traps unless the host answered INVALID_MEMORY_ACCESS (6).
	badAlloc := loadT(t, h, Spec{Name: "badalloc", Wasm: proxyWAT(t, "(i32.const 0x7ffffff0)",
		`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
			(if (i32.ne (call $get (i32.const 0) (i32.const 0) (i32.const 5) (i32.const 64) (i32.const 68)) (i32.const 6))
				(then unreachable))
			(i32.const 0))`), Settings: Settings{Pool: 1}})
	if resp, body := get(t, serve(t, NewChain(badAlloc).Then(echoBackend))); resp.StatusCode != 200 || body != "backend" {
		t.Errorf("bad allocator: %d %q, want the request through", resp.StatusCode, body)
	}
}

func FuzzDecodePairs(f *testing.F) {
	f.Add([]byte{2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 'a', 0, '1', 0, 'b', 0, '2', '2', 0})
	f.Add([]byte{0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		pairs, err := decodePairs(b)
		if err != nil {
			return
		}
		if again, err := decodePairs(encodePairs(pairs)); err != nil || len(again) != len(pairs) {
			t.Fatalf("re-encoding %v: %v, %v", pairs, again, err)
		}
	})
}

// An allocator that asks the host for memory again would recurse through
// Go's stack: the host refuses (the call traps) instead.
func TestProxyWasmAllocatorMayNotReenter(t *testing.T) {
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "reenter", Wasm: proxyWAT(t,
		"(drop (call $get (i32.const 0) (i32.const 0) (i32.const 5) (i32.const 64) (i32.const 68))) (i32.const 1024)",
		`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
			(drop (call $get (i32.const 0) (i32.const 0) (i32.const 5) (i32.const 64) (i32.const 68)))
			(i32.const 0))`), Settings: Settings{Pool: 1, Timeout: units.Duration(hostileDeadline)}})
	rss0 := settledRSS(t)
	resp, _ := get(t, serve(t, NewChain(tr).Then(echoBackend)))
	if resp.StatusCode != 500 {
		t.Errorf("status %d, want 500", resp.StatusCode)
	}
	if s := tr.Stats(); s.Traps != 1 {
		t.Errorf("stats %+v, want one trap", s)
	}
	if rss1 := settledRSS(t); rss1 > rss0+rssSlack {
		t.Errorf("rss %d -> %d MiB", rss0>>20, rss1>>20)
	}
}

// What a filter holds by pausing is bounded by max_buffer: a paused request
// body past it gets 413, and the node's heap does not grow by the body.
func TestProxyWasmHeldBodyIsBounded(t *testing.T) {
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "pw", Wasm: proxyTestGuest(t), Settings: Settings{Pool: 1, MaxBuffer: 1 << 20, Timeout: units.Duration(5 * time.Second)}})
	url := serve(t, NewChain(tr).Then(headerEcho))
	alloc0 := allocated()
	resp, err := http.Post(url+"/pause-body", "text/plain", io.LimitReader(zeros{}, 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if alloc := allocated() - alloc0; resp.StatusCode != http.StatusRequestEntityTooLarge || alloc > heapSlack {
		t.Errorf("status %d, %d MiB allocated; want 413 and under %d MiB", resp.StatusCode, alloc>>20, heapSlack>>20)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A client that leaves while its request waits on a dispatched call frees
// the instance at once, not when the call times out.
func TestProxyWasmCallWaitEndsWithTheClient(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	authz := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	h := newTestHost(t)
	h.dispatcher = testDispatcher{"auth-svc": authz}
	tr := loadT(t, h, Spec{Name: "pw", Wasm: proxyTestGuest(t), Settings: Settings{Clusters: map[string]string{"authz": "auth-svc"}, Pool: 1, Timeout: units.Duration(5 * time.Second)}})
	url := serve(t, NewChain(tr).Then(echoBackend))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/auth", nil)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("the call was answered")
	}
	// The only instance is free again well before the call's 5 s timeout.
	start := time.Now()
	resp, _ := get(t, url+"/x")
	if elapsed := time.Since(start); resp.StatusCode != 200 || elapsed > 2*time.Second {
		t.Errorf("next request: %d after %v, want 200 at once", resp.StatusCode, elapsed)
	}
}

// The SDK's postpone_requests: a request whose headers paused is resumed
// from the root context's tick, which stamps it first through
// proxy_set_effective_context; before it does, the tick acts for the root
// and neither its header change nor its continue reaches the request.
func TestProxyWasmPostponedRequestResumesOnTick(t *testing.T) {
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "pw", Wasm: proxyTestGuest(t), Config: []byte("tick"), Settings: Settings{Pool: 1, Timeout: units.Duration(5 * time.Second)}})
	var seen string
	url := serve(t, NewChain(tr).Then(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = strings.Join(r.Header.Values("X-Resumed"), ",")
	})))
	for range 2 {
		seen = ""
		if resp, _ := get(t, url+"/postpone"); resp.StatusCode != 200 || seen != "tick" {
			t.Errorf("postponed: %d, upstream saw x-resumed %q; want 200 and tick", resp.StatusCode, seen)
		}
	}
}

// A request paused for good ends at its deadline with 504, and its
// instance serves the next request; with no tick to resume it, at once
// with 500.
func TestProxyWasmPostponeIsBounded(t *testing.T) {
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "pw", Wasm: proxyTestGuest(t), Config: []byte("tick"), Settings: Settings{Pool: 1, Timeout: units.Duration(5 * time.Second)}})
	const bound = 300 * time.Millisecond
	chain := NewChain(tr).Then(echoBackend)
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), bound)
		defer cancel()
		chain.ServeHTTP(w, r.WithContext(ctx))
	}))
	start := time.Now()
	resp, _ := get(t, url+"/stall")
	if elapsed := time.Since(start); resp.StatusCode != http.StatusGatewayTimeout || elapsed > 2*bound+time.Second {
		t.Errorf("stalled: %d after %v, want 504 within about %v", resp.StatusCode, elapsed, bound)
	}
	if resp, body := get(t, url+"/x"); resp.StatusCode != 200 || body != "backend" {
		t.Errorf("next request: %d %q, want the backend's answer", resp.StatusCode, body)
	}
	if s := tr.Stats(); s.Replaced != 0 || s.Traps != 0 {
		t.Errorf("stats %+v: the instance should have been kept", s)
	}

	noTick := loadProxyTest(t, h, "")
	start = time.Now()
	resp, _ = get(t, serve(t, NewChain(noTick).Then(echoBackend))+"/stall")
	if elapsed := time.Since(start); resp.StatusCode != 500 || elapsed > bound {
		t.Errorf("stalled without ticks: %d after %v, want 500 at once", resp.StatusCode, elapsed)
	}
}

// The SDK's dispatch_call_on_tick: the root context dispatches a call from
// every tick, outside any request; a call outstanding at shutdown does not
// hold the transform up for its timeout.
func TestProxyWasmTickDispatchesCalls(t *testing.T) {
	var hang atomic.Bool
	release := make(chan struct{})
	authz := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tick" {
			http.Error(w, "no", http.StatusNotFound)
			return
		}
		if hang.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}))
	defer close(release)
	h := newTestHost(t)
	h.dispatcher = testDispatcher{"auth-svc": authz}
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.metrics)
	tr, err := h.Load(context.Background(), Spec{Name: "ticker", Wasm: proxyTestGuest(t), Config: []byte("tick-call"), Settings: Settings{Pool: 1, Clusters: map[string]string{"authz": "auth-svc"}}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for gathered(t, reg, "perigee_wasm_tick_calls", "ticker") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("tick calls answered: %v after 20s", gathered(t, reg, "perigee_wasm_tick_calls", "ticker"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	hang.Store(true)
	time.Sleep(100 * time.Millisecond) // a tick's call now hangs, for up to its 5 s
	// Release drops the last reference but the tick in flight holds one;
	// the transform shuts down once the tick gives up its call.
	start := time.Now()
	tr.Release()
	for tr.stopped.Err() == nil && time.Since(start) < 10*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("shut down after %v with a call outstanding, want at once", elapsed)
	}
}

// The count the headers callbacks get is the number of pairs the map lists.
func TestPairCountMatchesPairs(t *testing.T) {
	r := httptest.NewRequest("POST", "/p?q=1", nil)
	r.Header = http.Header{"A": {"1", "2"}, "B": {"3"}}
	r.Trailer = http.Header{"T": {"4"}}
	w := httptest.NewRecorder()
	w.Header().Set("C", "5")
	w.Header().Set(http.TrailerPrefix+"D", "6")
	x := &exchange{r: r, w: w, pwState: proxyState{status: 200}}
	x.pw = &x.pwState
	for _, kind := range []uint32{kindRequest, kindRequestTrailers, kindResponse, kindResponseTrailers} {
		if n, pairs := x.pairCount(kind), x.pairs(kind); n != len(pairs) {
			t.Errorf("kind %d: count %d, pairs %v", kind, n, pairs)
		}
	}
}

// The names a filter gives the node to keep (metrics and shared queues,
// host-wide and for as long as the node runs) are bounded in length: a
// filter defining the most metrics and queues it may, each with a name of
// 64 KiB, kept 200 MiB of heap before; now it keeps none of them.
func TestProxyWasmNamesAreBounded(t *testing.T) {
	guest := wat(t, `(module
		(import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
		(import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
		(memory (export "memory") 2)
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
		(func (export "proxy_on_context_create") (param i32 i32))
		(func (export "proxy_on_vm_start") (param i32 i32) (result i32) (local $i i32) (local $refused i32)
			(memory.fill (i32.const 16) (i32.const 97) (i32.const 67584))
			(loop $more
				;; each name one byte longer than the last, so none repeats
				(if (i32.ne (call $define (i32.const 0) (i32.const 16) (i32.add (i32.const 65536) (local.get $i)) (i32.const 0)) (i32.const 0))
					(then (local.set $refused (i32.add (local.get $refused) (i32.const 1)))))
				(if (i32.ne (call $register (i32.const 16) (i32.add (i32.const 65536) (local.get $i)) (i32.const 0)) (i32.const 0))
					(then (local.set $refused (i32.add (local.get $refused) (i32.const 1)))))
				(local.set $i (i32.add (local.get $i) (i32.const 1)))
				(br_if $more (i32.lt_u (local.get $i) (i32.const 1024))))
			;; the host must have refused every one of them
			(if (i32.ne (local.get $refused) (i32.const 2048)) (then unreachable))
			(i32.const 1)))`)
	h := newTestHost(t)
	before := memtest.LiveHeap()
	tr, err := h.Load(context.Background(), Spec{Name: "names", Wasm: guest, Settings: Settings{Pool: 1, ABI: ABIProxyWasm}})
	grown := int64(memtest.LiveHeap()) - int64(before)
	if err != nil {
		t.Fatalf("load (the heap grew by %d MiB meanwhile): %v", grown>>20, err)
	}
	defer tr.Release()
	if grown > 16<<20 {
		t.Errorf("the node keeps %d MiB for the filter's names", grown>>20)
	}
	t.Logf("live heap grew by %d KiB", grown>>10)
}

// dispatcherFunc is a Dispatcher from a function.
type dispatcherFunc func(ctx context.Context, service string, req *http.Request) (*http.Response, error)

func (f dispatcherFunc) Dispatch(ctx context.Context, service string, req *http.Request) (*http.Response, error) {
	return f(ctx, service, req)
}

// A dispatched call's headers, like its body, are bounded by max_buffer:
// 16 calls (the most a request may have) with 8 MiB of headers each kept
// over 256 MiB while they were in flight.
func TestProxyWasmCallHeadersAreBounded(t *testing.T) {
	guest := wat(t, `(module
		(import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
		(memory (export "memory") 144)
		;; "authz", then one pair: "x" and 8 MiB of "a"
		(data (i32.const 0) "authz")
		(data (i32.const 16) "\01\00\00\00\01\00\00\00\00\00\80\00x\00")
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
		(func (export "proxy_on_context_create") (param i32 i32))
		(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $i i32)
			(memory.fill (i32.const 30) (i32.const 97) (i32.const 8388608))
			(i32.store8 (i32.const 8388638) (i32.const 0))
			(loop $more
				(drop (call $call (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 8388623)
					(i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 8)))
				(local.set $i (i32.add (local.get $i) (i32.const 1)))
				(br_if $more (i32.lt_u (local.get $i) (i32.const 16))))
			(i32.const 0)))`)
	var sent atomic.Int64
	release := make(chan struct{})
	h := newTestHost(t)
	h.dispatcher = dispatcherFunc(func(ctx context.Context, _ string, req *http.Request) (*http.Response, error) {
		defer runtime.KeepAlive(req) // as a real upstream holds it while sending
		sent.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, errors.New("released")
	})
	tr := loadT(t, h, Spec{Name: "calls", Wasm: guest, Settings: Settings{Pool: 1, MaxBuffer: 4 << 20, Clusters: map[string]string{"authz": "auth-svc"}, Timeout: units.Duration(10 * time.Second)}})
	url := serve(t, NewChain(tr).Then(echoBackend))
	before := memtest.LiveHeap()
	done := make(chan int, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	status := -1
	for wait := time.Now().Add(10 * time.Second); sent.Load() < 16 && status < 0 && time.Now().Before(wait); time.Sleep(time.Millisecond) {
		select {
		case status = <-done:
		default:
		}
	}
	grown := int64(memtest.LiveHeap()) - int64(before)
	close(release)
	if status < 0 {
		status = <-done
	}
	if n := sent.Load(); n != 0 {
		t.Errorf("%d calls with 8 MiB of headers were sent, want none past max_buffer", n)
	}
	if grown > 32<<20 {
		t.Errorf("the heap grew by %d MiB with the calls in flight", grown>>20)
	}
	t.Logf("status %d, %d calls sent, heap grew by %d MiB", status, sent.Load(), grown>>20)
}

// A local response's headers, like its body, are bounded by max_buffer.
func TestProxyWasmLocalResponseHeadersAreBounded(t *testing.T) {
	guest := wat(t, `(module
		(import "env" "proxy_send_local_response" (func $send (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
		(memory (export "memory") 144)
		;; one pair: "x" and 8 MiB of "a"
		(data (i32.const 16) "\01\00\00\00\01\00\00\00\00\00\80\00x\00")
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
		(func (export "proxy_on_context_create") (param i32 i32))
		(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
			(memory.fill (i32.const 30) (i32.const 97) (i32.const 8388608))
			(i32.store8 (i32.const 8388638) (i32.const 0))
			(drop (call $send (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
				(i32.const 16) (i32.const 8388623) (i32.const -1)))
			(i32.const 1)))`)
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "local", Wasm: guest, Settings: Settings{Pool: 1, MaxBuffer: 4 << 20, Timeout: units.Duration(10 * time.Second)}})
	resp, err := http.Get(serve(t, NewChain(tr).Then(echoBackend)))
	if err != nil {
		t.Fatalf("%.200v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || len(resp.Header.Get("X")) != 0 {
		t.Errorf("status %d with a %d-byte header, want 502", resp.StatusCode, len(resp.Header.Get("X")))
	}
}

// A property path is split into at most the segments a property has: a
// 16 MiB path of NULs, 16 million empty segments, allocated 16 times its
// size (a gigabyte for a 64 MiB memory) in one call.
func TestProxyWasmPropertyPathIsBounded(t *testing.T) {
	guest := wat(t, `(module
		(import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
		(memory (export "memory") 257)
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
		(func (export "proxy_on_context_create") (param i32 i32))
		(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
			(if (i32.ne (call $prop (i32.const 0) (i32.const 16777216) (i32.const 16777216) (i32.const 16777220)) (i32.const 1))
				(then unreachable)) ;; NOT_FOUND
			(i32.const 0)))`)
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "prop", Wasm: guest, Settings: Settings{Pool: 1, Timeout: units.Duration(10 * time.Second)}})
	url := serve(t, NewChain(tr).Then(echoBackend))
	runtime.GC()
	before := allocated()
	resp, body := get(t, url)
	grown := allocated() - before
	if resp.StatusCode != 200 {
		t.Errorf("status %d %q, want 200", resp.StatusCode, body)
	}
	if grown > 64<<20 {
		t.Errorf("one property lookup allocated %d MiB", grown>>20)
	}
	t.Logf("allocated %d MiB", grown>>20)
}

// chainedCallsGuest dispatches a call from start, and another from each
// call's callback: a chain the per-request bound must end, not one call
// outstanding at a time forever.
func chainedCallsGuest(t *testing.T, start string) []byte {
	return wat(t, `(module
		(import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
		(import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
		(memory (export "memory") 1)
		(data (i32.const 0) "authz")
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
		(func (export "proxy_on_context_create") (param i32 i32))
		(func $dispatch
			(drop (call $call (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
				(i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 8))))
		(func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32) (call $dispatch))
		`+start+`)`)
}

// The bound on dispatched calls holds for a request, and for a root
// callback, whatever the callbacks dispatch in turn: a chain of one call
// at a time, each answered at once, went on for as long as the client
// waited (thousands of calls to the service for one request) and kept a
// tick's instance out of the pool for good.
func TestProxyWasmChainedCallsAreBounded(t *testing.T) {
	var sent atomic.Int64
	h := newTestHost(t)
	h.dispatcher = dispatcherFunc(func(context.Context, string, *http.Request) (*http.Response, error) {
		sent.Add(1)
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody}, nil
	})
	clusters := map[string]string{"authz": "auth-svc"}
	onRequest := loadT(t, h, Spec{Name: "chain", Wasm: chainedCallsGuest(t,
		`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $dispatch) (i32.const 1))`),
		Settings: Settings{Pool: 1, Clusters: clusters, Timeout: units.Duration(5 * time.Second)}})
	url := serve(t, NewChain(onRequest).Then(echoBackend))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("request: %v after %d calls", err, sent.Load())
	}
	resp.Body.Close()
	if n := sent.Load(); n != maxCallsPerRequest {
		t.Errorf("one request dispatched %d calls, want %d", n, maxCallsPerRequest)
	}

	// A tick (the first, which stops the ticks) starts the chain.
	sent.Store(0)
	onTick := loadT(t, h, Spec{Name: "tick-chain", Wasm: chainedCallsGuest(t, `
		(func (export "proxy_on_vm_start") (param i32 i32) (result i32) (drop (call $tick (i32.const 10))) (i32.const 1))
		(func (export "proxy_on_tick") (param i32) (drop (call $tick (i32.const 0))) (call $dispatch))`),
		Settings: Settings{Pool: 1, Clusters: clusters, Timeout: units.Duration(5 * time.Second)}})
	// The instance is out of the pool from the tick on, until its calls
	// are done.
	for deadline := time.Now().Add(5 * time.Second); sent.Load() == 0 || len(onTick.pool) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the tick's instance is still out of the pool after %d calls", sent.Load())
		}
	}
	if n := sent.Load(); n != maxCallsPerRequest {
		t.Errorf("one tick dispatched %d calls, want %d", n, maxCallsPerRequest)
	}
}

// sharingWAT is a proxy-wasm filter whose proxy_on_vm_start runs body
// with shared data and queues imported; memory holds a 1 MiB value at 16.
func sharingWAT(t *testing.T, body string) []byte {
	return wat(t, `(module
		(import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))
		(import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
		(import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
		(memory (export "memory") 18)
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
		(func (export "proxy_on_context_create") (param i32 i32))
		(func (export "proxy_on_vm_start") (param i32 i32) (result i32) (local $i i32) (local $q i32) (local $s i32)
			`+body+`
			(i32.const 1)))`)
}

// A filter whose start enqueues (or sets a tick) has a root callback
// looking for an instance while its load still makes them: it must wait
// for one, not make one more than the pool holds, which left an instance
// nobody could put back and the transform's Release waiting for it forever.
func TestRootCallbackDuringLoadKeepsThePool(t *testing.T) {
	guest := sharingWAT(t, `
		(i32.store (i32.const 0) (i32.const 113))
		(if (call $register (i32.const 0) (i32.const 1) (i32.const 8)) (then unreachable))
		(if (call $enqueue (i32.load (i32.const 8)) (i32.const 16) (i32.const 1)) (then unreachable))`)
	h := newTestHost(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20 { // the race is the callback's against the load
			tr, err := h.Load(context.Background(), Spec{Name: "q" + strconv.Itoa(i), Wasm: guest, Settings: Settings{Pool: 1, ABI: ABIProxyWasm, Timeout: units.Duration(time.Second)}})
			if err != nil {
				t.Error(err)
				return
			}
			tr.Release()
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("loading and releasing a filter that enqueues at start hung")
	}
}

// One filter cannot take what the node shares among all: a filter that
// stores shared data, registers queues and enqueues until the host says
// INTERNAL_FAILURE leaves room for the next filter to do each of them.
func TestProxyWasmSharingIsBoundedPerFilter(t *testing.T) {
	// The key or queue name is the 4-byte counter at 0; values are 1 MiB.
	hog := sharingWAT(t, `
		(loop $data
			(i32.store (i32.const 0) (local.get $i))
			(local.set $s (call $set (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 1048576) (i32.const 0)))
			(local.set $i (i32.add (local.get $i) (i32.const 1)))
			(br_if $data (i32.and (i32.eqz (local.get $s)) (i32.lt_u (local.get $i) (i32.const 128)))))
		(if (i32.ne (local.get $s) (i32.const 10)) (then unreachable))
		(local.set $i (i32.const 0))
		(loop $queues
			(i32.store (i32.const 0) (local.get $i))
			(local.set $s (call $register (i32.const 0) (i32.const 4) (i32.const 8)))
			(local.set $i (i32.add (local.get $i) (i32.const 1)))
			(br_if $queues (i32.and (i32.eqz (local.get $s)) (i32.lt_u (local.get $i) (i32.const 2048)))))
		(if (i32.ne (local.get $s) (i32.const 10)) (then unreachable))
		;; 1 MiB items, four (4 MiB, a queue's bound) into each of queue
		;; 1, 2, ... until one is refused, at most 128
		(local.set $i (i32.const 0))
		(local.set $q (i32.const 1))
		(loop $items
			(local.set $s (call $enqueue (local.get $q) (i32.const 16) (i32.const 1048576)))
			(if (i32.eqz (local.get $s)) (then
				(local.set $i (i32.add (local.get $i) (i32.const 1)))
				(if (i32.eqz (i32.rem_u (local.get $i) (i32.const 4)))
					(then (local.set $q (i32.add (local.get $q) (i32.const 1)))))))
			(br_if $items (i32.and (i32.eqz (local.get $s)) (i32.lt_u (local.get $i) (i32.const 128)))))
		(if (i32.ne (local.get $s) (i32.const 10)) (then unreachable))`)
	// The next filter stores a key, registers a queue and enqueues to it,
	// and traps (failing its load) unless each is OK.
	next := sharingWAT(t, `
		(i32.store (i32.const 0) (i32.const -1))
		(if (call $set (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 1048576) (i32.const 0)) (then unreachable))
		(if (call $register (i32.const 0) (i32.const 4) (i32.const 8)) (then unreachable))
		(if (call $enqueue (i32.load (i32.const 8)) (i32.const 16) (i32.const 1048576)) (then unreachable))`)
	h := newTestHost(t)
	loadT(t, h, Spec{Name: "hog", Wasm: hog, Settings: Settings{Pool: 1, ABI: ABIProxyWasm, Timeout: units.Duration(10 * time.Second)}})
	loadT(t, h, Spec{Name: "next", Wasm: next, Settings: Settings{Pool: 1, ABI: ABIProxyWasm, VMID: "next", Timeout: units.Duration(10 * time.Second)}})
	h.shared.mu.Lock()
	got := *h.shared.accounts["hog"]
	h.shared.mu.Unlock()
	// 15 values of 1 MiB and their keys fit a quarter of 64 MiB; 16 items.
	if want := (account{bytes: 15 * (4 + 1<<20), keys: 15, queues: maxQueues / filterShare, queued: 16 << 20}); got != want {
		t.Errorf("the hog holds %+v, want its share %+v", got, want)
	}
}

// A load that fails after its start function set off a root callback ends
// that callback's wait for an instance, rather than waiting out the
// transform's timeout for one that will never come.
func TestFailedLoadEndsRootCallbackWait(t *testing.T) {
	guest := sharingWAT(t, `
		(i32.store (i32.const 0) (i32.const 113))
		(if (call $register (i32.const 0) (i32.const 1) (i32.const 8)) (then unreachable))
		(if (call $enqueue (i32.load (i32.const 8)) (i32.const 16) (i32.const 1)) (then unreachable))
		;; a while, for the callback to start waiting, then a trap
		(loop $busy
			(local.set $i (i32.add (local.get $i) (i32.const 1)))
			(br_if $busy (i32.lt_u (local.get $i) (i32.const 100000000))))
		unreachable`)
	h := newTestHost(t)
	loaded := make(chan error, 1)
	go func() {
		_, err := h.Load(context.Background(), Spec{Name: "fails", Wasm: guest, Settings: Settings{Pool: 1, ABI: ABIProxyWasm, Timeout: units.Duration(time.Hour)}})
		loaded <- err
	}()
	select {
	case err := <-loaded:
		if err == nil {
			t.Error("a filter whose start traps loaded")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a failed load still waiting 20s later for its root callback (timeout 1h)")
	}
}

// TestReleaseStopsAReplacementStart for a proxy-wasm filter, whose start
// is also its root context's proxy_on_vm_start: that call, too, ends when
// the transform is released.
func TestReleaseStopsAProxyWasmReplacementStart(t *testing.T) {
	h := newTestHost(t)
	const trap = `(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)`
	tr, err := h.Load(context.Background(), Spec{Name: "pw", Wasm: proxyWAT(t, "(i32.const 1024)", trap), Settings: Settings{Pool: 1}})
	if err != nil {
		t.Fatal(err)
	}
	loops, _, err := h.compileGuest(context.Background(), tr.rt, proxyWAT(t, "(i32.const 1024)", trap+`
		(func (export "proxy_on_vm_start") (param i32 i32) (result i32) (loop $l (br $l)) (i32.const 1))`), "")
	if err != nil {
		t.Fatal(err)
	}
	tr.compiled = loops
	if resp, _ := get(t, serve(t, NewChain(tr).Then(echoBackend))); resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("a trapping filter: %d, want 500", resp.StatusCode)
	}
	released := make(chan struct{})
	go func() { tr.Release(); close(released) }()
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("Release still waiting 5s later for a replacement's proxy_on_vm_start")
	}
}

// metricsWAT is a filter whose vm_start runs body, with $define imported,
// the names at 0 and 64 in memory, and traps unless body leaves 1.
func metricsWAT(t *testing.T, names [2]string, body string) []byte {
	return wat(t, `(module
		(import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
		(memory (export "memory") 1)
		(data (i32.const 0) "`+names[0]+`")
		(data (i32.const 64) "`+names[1]+`")
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
		(func (export "proxy_on_context_create") (param i32 i32))
		(func (export "proxy_on_vm_start") (param i32 i32) (result i32) (local $i i32) (local $s i32)
			`+body+`))`)
}

// A histogram's series are <name>_bucket, _sum and _count: a filter that
// defined a histogram h and a counter h_count (or the other way round, or
// in two filters) made the registry's Gather fail, and the node's /metrics
// answered 500 for all of its metrics. The second definition is
// BAD_ARGUMENT, as one of another type under the same name is.
func TestProxyWasmMetricNamesCannotCollide(t *testing.T) {
	for _, c := range []struct {
		first, second         string
		firstKind, secondKind int
	}{
		{"lat", "lat_count", metricHistogram, metricCounter},
		{"lat", "lat_sum", metricHistogram, metricGauge},
		{"lat", "lat_bucket", metricHistogram, metricHistogram},
		{"q_count", "q", metricCounter, metricHistogram},
		{"q_sum", "q", metricGauge, metricHistogram},
	} {
		h := newTestHost(t)
		reg := prometheus.NewRegistry()
		reg.MustRegister(h.metrics)
		define := func(name string, kind, want int) []byte {
			return metricsWAT(t, [2]string{name}, fmt.Sprintf(`
				(if (i32.ne (call $define (i32.const %d) (i32.const 0) (i32.const %d) (i32.const 128)) (i32.const %d))
					(then unreachable))
				(i32.const 1)`, kind, len(name), want))
		}
		loadT(t, h, Spec{Name: "a", Wasm: define(c.first, c.firstKind, statusOK), Settings: Settings{Pool: 1, ABI: ABIProxyWasm}})
		// Another filter, and then the same one, may not define the second.
		for _, filter := range []string{"b", "a"} {
			tr, err := h.Load(context.Background(), Spec{Name: filter, Wasm: define(c.second, c.secondKind, statusBadArgument), Settings: Settings{Pool: 1, ABI: ABIProxyWasm}})
			if err != nil {
				t.Errorf("%s, then %s in filter %s: %v", c.first, c.second, filter, err)
				continue
			}
			tr.Release()
		}
		if _, err := reg.Gather(); err != nil {
			t.Errorf("%s then %s: gather: %v", c.first, c.second, err)
		}
	}
}

// The node's guest metrics are bounded, and as with shared data and queues
// one filter may define only a share of them: one that defined all 1024
// left every other filter INTERNAL_FAILURE, and the SDKs' define panics
// on it, failing their start.
func TestProxyWasmMetricsAreBoundedPerFilter(t *testing.T) {
	// Names of three letters a..p, from the counter $i, until refused.
	hog := metricsWAT(t, [2]string{}, `
		(loop $more
			(i32.store8 (i32.const 0) (i32.add (i32.const 97) (i32.and (local.get $i) (i32.const 15))))
			(i32.store8 (i32.const 1) (i32.add (i32.const 97) (i32.and (i32.shr_u (local.get $i) (i32.const 4)) (i32.const 15))))
			(i32.store8 (i32.const 2) (i32.add (i32.const 97) (i32.and (i32.shr_u (local.get $i) (i32.const 8)) (i32.const 15))))
			(local.set $s (call $define (i32.const 0) (i32.const 0) (i32.const 3) (i32.const 128)))
			(local.set $i (i32.add (local.get $i) (i32.const 1)))
			(br_if $more (i32.and (i32.eqz (local.get $s)) (i32.lt_u (local.get $i) (i32.const 4096)))))
		(i32.eq (local.get $s) (i32.const 10))`)
	next := metricsWAT(t, [2]string{"next"}, `
		(i32.eqz (call $define (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 128)))`)
	h := newTestHost(t)
	loadT(t, h, Spec{Name: "hog", Wasm: hog, Settings: Settings{Pool: 1, ABI: ABIProxyWasm}})
	loadT(t, h, Spec{Name: "next", Wasm: next, Settings: Settings{Pool: 1, ABI: ABIProxyWasm}})
	h.metrics.mu.Lock()
	defined := len(h.metrics.byID)
	h.metrics.mu.Unlock()
	if want := maxGuestMetrics/filterShare + 1; defined != want {
		t.Errorf("%d metrics defined, want the hog's share and one", defined)
	}
}

// proxy_set_header_map_pairs read the whole guest-chosen buffer before
// max_buffer bounded anything, and made room for the count of pairs it
// claimed: 32 bytes of heap for each 8 bytes of buffer, 256 MiB for a
// guest's 64 MiB, whatever the pairs turned out to be. A map past
// max_buffer fails the request as the headers set past it do.
func TestProxyWasmSetHeaderMapPairsIsBounded(t *testing.T) {
	guest := wat(t, `(module
		(import "env" "proxy_set_header_map_pairs" (func $set (param i32 i32 i32) (result i32)))
		(memory (export "memory") 1024)
		;; a count of 8388607 pairs, the most 64 MiB - 4 bytes could have
		;; lengths for, and nothing else
		(data (i32.const 0) "\ff\ff\7f\00")
		(func (export "proxy_abi_version_0_2_1"))
		(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
		(func (export "proxy_on_context_create") (param i32 i32))
		(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
			(drop (call $set (i32.const 0) (i32.const 0) (i32.const 67108860)))
			(i32.const 0)))`)
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "pairs", Wasm: guest, Settings: Settings{Pool: 1, MaxBuffer: 4 << 20, Timeout: units.Duration(10 * time.Second)}})
	url := serve(t, NewChain(tr).Then(echoBackend))
	before := allocated()
	resp, _ := get(t, url)
	spent := allocated() - before
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("status %d, want 500 for a map past max_buffer", resp.StatusCode)
	}
	if spent > 16<<20 {
		t.Errorf("the request allocated %d MiB", spent>>20)
	}
	t.Logf("allocated %d KiB", spent>>10)
}
