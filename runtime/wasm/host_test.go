package wasm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"perigee/logtest"
	"perigee/telemetry"

	"perigee/units"
)

// wat compiles WebAssembly text with wabt's wat2wasm, which .ci/run
// installs; without it the test is skipped.
func wat(t testing.TB, src string) []byte {
	t.Helper()
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		t.Skip("wat2wasm not installed (Debian package wabt)")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "m.wat")
	if strings.HasSuffix(src, ".wat") {
		in = filepath.Join("testdata", src)
	} else if err := os.WriteFile(in, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "m.wasm")
	if b, err := exec.Command("wat2wasm", in, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// echoBackend answers with the x-chain request values it received.
var echoBackend = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-seen-chain", strings.Join(r.Header.Values("x-chain"), ","))
	io.WriteString(w, "backend")
})

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestChainOrderAndConfig(t *testing.T) {
	probe := wat(t, "probe.wat")
	h := newTestHost(t)
	a := loadT(t, h, Spec{Name: "a", Wasm: probe, Config: []byte("a"), Settings: Settings{Pool: 1}})
	b := loadT(t, h, Spec{Name: "b", Wasm: probe, Config: []byte("b"), Settings: Settings{Pool: 1}})
	url := serve(t, NewChain(a, b).Then(echoBackend))

	resp, body := get(t, url+"/pass")
	if body != "backend" || resp.StatusCode != 200 {
		t.Fatalf("got %d %q, want 200 backend", resp.StatusCode, body)
	}
	if got := resp.Header.Get("x-seen-chain"); got != "a,b" {
		t.Errorf("request order seen by backend = %q, want a,b", got)
	}
	if got := strings.Join(resp.Header.Values("x-chain-resp"), ","); got != "b,a" {
		t.Errorf("response order = %q, want b,a (reverse)", got)
	}
	if s := a.Stats(); s.Calls != 1 || s.Errors != 0 || s.Time.Count() != 1 {
		t.Errorf("stats of a = %+v", s)
	}
}

func TestGuestAnswersAndStopsChain(t *testing.T) {
	probe := wat(t, "probe.wat")
	h := newTestHost(t)
	a := loadT(t, h, Spec{Name: "a", Wasm: probe, Config: []byte("a"), Settings: Settings{Pool: 1}})
	b := loadT(t, h, Spec{Name: "b", Wasm: probe, Config: []byte("b"), Settings: Settings{Pool: 1}})
	backendCalled := false
	url := serve(t, NewChain(a, b).Then(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { backendCalled = true })))

	resp, body := get(t, url+"/deny")
	if resp.StatusCode != 403 || body != "denied" {
		t.Fatalf("got %d %q, want 403 denied", resp.StatusCode, body)
	}
	if backendCalled || b.Stats().Calls != 0 {
		t.Error("chain went on after the guest answered")
	}
	if a.Stats().Answered != 1 {
		t.Errorf("answered = %d, want 1", a.Stats().Answered)
	}
}

// A guest in an endless loop is stopped at its deadline, the request gets
// 500, the instance is replaced and the transform keeps serving.
func TestTimeoutStopsGuestAndNodeKeepsServing(t *testing.T) {
	probe := wat(t, "probe.wat")
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "p", Wasm: probe, Settings: Settings{Pool: 1, Timeout: units.Duration(200 * time.Millisecond)}})
	url := serve(t, NewChain(tr).Then(echoBackend))

	resp, _ := get(t, url+"/loop")
	if resp.StatusCode != 500 {
		t.Fatalf("looping guest: status %d, want 500", resp.StatusCode)
	}
	// The pool had one instance: this only succeeds once it is replaced.
	resp, body := get(t, url+"/pass")
	if resp.StatusCode != 200 || body != "backend" {
		t.Fatalf("after timeout: %d %q", resp.StatusCode, body)
	}
	s := tr.Stats()
	if s.Timeouts != 1 || s.Errors != 1 || s.Replaced != 1 {
		t.Errorf("stats = %+v, want 1 timeout, 1 error, 1 replaced", s)
	}
}

func TestTrapDiscardsInstance(t *testing.T) {
	probe := wat(t, "probe.wat")
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "p", Wasm: probe, Settings: Settings{Pool: 1}})
	url := serve(t, NewChain(tr).Then(echoBackend))
	for i := range 3 {
		if resp, _ := get(t, url+"/trap"); resp.StatusCode != 500 {
			t.Fatalf("trap %d: status %d, want 500", i, resp.StatusCode)
		}
	}
	if resp, _ := get(t, url+"/pass"); resp.StatusCode != 200 {
		t.Fatalf("after traps: status %d", resp.StatusCode)
	}
	if s := tr.Stats(); s.Traps != 3 || s.Replaced != 3 {
		t.Errorf("stats = %+v, want 3 traps and 3 replacements", s)
	}
}

func TestMemoryCap(t *testing.T) {
	probe := wat(t, "probe.wat")
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "p", Wasm: probe, Settings: Settings{Pool: 1, Memory: 1 << 20}})
	url := serve(t, NewChain(tr).Then(echoBackend))
	if _, body := get(t, url+"/grow"); body != "grow-failed" {
		t.Errorf("memory.grow past the cap: body %q, want grow-failed", body)
	}
	big := wat(t, `(module (memory (export "memory") 32)
		(func (export "handle_request") (result i64) (i64.const 1))
		(func (export "handle_response") (param i32 i32)))`)
	if _, err := h.Load(context.Background(), Spec{Name: "big", Wasm: big, Settings: Settings{Memory: 1 << 20}}); err == nil {
		t.Error("a module needing 2 MiB loaded under a 1 MiB cap")
	}
}

// Under load, requests wait for a free instance instead of instantiating:
// the pool never grows and nothing is created on the request path.
func TestPoolBoundsConcurrency(t *testing.T) {
	probe := wat(t, "probe.wat")
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "p", Wasm: probe, Settings: Settings{Pool: 2, Timeout: units.Duration(10 * time.Second)}})
	var mu sync.Mutex
	inBackend, maxInBackend := 0, 0
	url := serve(t, NewChain(tr).Then(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inBackend++
		maxInBackend = max(maxInBackend, inBackend)
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		inBackend--
		mu.Unlock()
	})))
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if resp, _ := get(t, url+"/pass"); resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if maxInBackend > 2 {
		t.Errorf("%d requests inside the transform at once, pool is 2", maxInBackend)
	}
	if s := tr.Stats(); s.Calls != 20 || s.Busy != 0 || s.Replaced != 0 || len(tr.pool) != 2 {
		t.Errorf("stats = %+v, idle %d; want 20 calls, none busy or replaced, 2 idle", s, len(tr.pool))
	}
}

// A request keeps its instance while it is downstream only for the guest's
// handle_response, which must run on the same instance: a guest whose
// handle_response is empty (it acts on the request alone) gives its
// instance back after handle_request, so a request waiting on upstream
// does not hold up the next one.
func TestInstanceHeldDownstreamOnlyForHandleResponse(t *testing.T) {
	h := newTestHost(t)
	for _, c := range []struct {
		name, handleResponse string
		held                 bool
	}{
		{"empty handle_response", "", false},
		{"handle_response with code", "(drop (local.get 1))", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			guest := wat(t, stampGuest(c.handleResponse))
			tr := loadT(t, h, Spec{Name: "t", Wasm: guest, Settings: Settings{Pool: 1, Timeout: units.Duration(100 * time.Millisecond)}})
			entered, release := make(chan struct{}), make(chan struct{})
			url := serve(t, NewChain(tr).Then(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					close(entered)
					<-release
				}
				io.WriteString(w, "backend")
			})))
			slow := make(chan *http.Response, 1)
			go func() {
				resp, err := http.Get(url + "/slow")
				if err != nil {
					t.Error(err)
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				slow <- resp
			}()
			<-entered
			// The slow request is downstream; the only instance is free
			// unless handle_response is still to run on it.
			resp, body := get(t, url+"/fast")
			close(release)
			want := http.StatusOK
			if c.held {
				want = http.StatusServiceUnavailable
			}
			if resp.StatusCode != want {
				t.Errorf("while another request is downstream: %d %q, want %d", resp.StatusCode, body, want)
			}
			if want == http.StatusOK && (body != "backend" || resp.Header.Get("x-stamp") != "x-stamp") {
				t.Errorf("second request: %q, x-stamp %q; want the transform's header on the backend's answer", body, resp.Header.Get("x-stamp"))
			}
			if r := <-slow; r == nil || r.StatusCode != 200 || r.Header.Get("x-stamp") != "x-stamp" {
				t.Errorf("slow request: %+v, want 200 with x-stamp", r)
			}
			if s := tr.Stats(); s.Calls != 2 || s.Replaced != 0 || len(tr.pool) != 1 {
				t.Errorf("stats = %+v, idle %d; want 2 calls, none replaced, the instance back", s, len(tr.pool))
			}
		})
	}
}

// A response the rest of the chain aborts (net/http's panic) gives the
// instance back once, whether the request still held it or had given it
// back after handle_request.
func TestAbortedResponseGivesInstanceBackOnce(t *testing.T) {
	h := newTestHost(t)
	for name, guest := range map[string][]byte{"empty handle_response": wat(t, stampWat), "probe": wat(t, "probe.wat")} {
		t.Run(name, func(t *testing.T) {
			tr := loadT(t, h, Spec{Name: "t", Wasm: guest, Settings: Settings{Pool: 1, Timeout: units.Duration(100 * time.Millisecond)}})
			aborting := NewChain(tr).Then(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
			done := make(chan any)
			go func() {
				defer func() { done <- recover() }()
				aborting.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/pass", nil))
			}()
			select {
			case p := <-done:
				if p != http.ErrAbortHandler {
					t.Errorf("the chain ended with %v, want the abort passed on", p)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the aborted request never returned")
			}
			rec := httptest.NewRecorder()
			NewChain(tr).Then(echoBackend).ServeHTTP(rec, httptest.NewRequest("GET", "/pass", nil))
			if rec.Code != 200 || len(tr.pool) != 1 || tr.Stats().Replaced != 0 {
				t.Errorf("next request %d, idle %d, stats %+v; want 200 and the one instance back", rec.Code, len(tr.pool), tr.Stats())
			}
		})
	}
}

func TestBadModules(t *testing.T) {
	h := newTestHost(t)
	cases := map[string]struct {
		wasm []byte
		want string
	}{
		"not wasm":        {[]byte("#!/bin/sh\necho hi\n"), "not a WebAssembly module"},
		"missing exports": {wat(t, `(module (memory (export "memory") 1))`), "does not export handle_request"},
		"unknown import": {wat(t, `(module (import "env" "open" (func))
			(memory (export "memory") 1)
			(func (export "handle_request") (result i64) (i64.const 1))
			(func (export "handle_response") (param i32 i32)))`), "imports env.open"},
		"wrong signature": {wat(t, `(module (import "http_handler" "get_uri" (func (param i32) (result i32)))
			(memory (export "memory") 1)
			(func (export "handle_request") (result i64) (i64.const 1))
			(func (export "handle_response") (param i32 i32)))`), "http_handler.get_uri with signature"},
		"no memory export": {wat(t, `(module
			(func (export "handle_request") (result i64) (i64.const 1))
			(func (export "handle_response") (param i32 i32)))`), "does not export its memory"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if err := h.Validate(context.Background(), c.wasm); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Validate: %v, want %q", err, c.want)
			}
			_, err := h.Load(context.Background(), Spec{Name: "bad", Source: "bad.wasm", Wasm: c.wasm})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.wasm") {
				t.Errorf("Load: %v, want %q naming bad.wasm", err, c.want)
			}
		})
	}
}

// A reload that fails keeps the previous set; one that succeeds keeps
// unchanged transforms and replaces changed ones, which close only after
// their in-flight requests finish.
func TestReloadDrainsOldInstances(t *testing.T) {
	probe := wat(t, "probe.wat")
	h := newTestHost(t)
	ctx := context.Background()
	v1, err := h.LoadSet(ctx, []Spec{{Name: "a", Wasm: probe, Config: []byte("a1")}, {Name: "b", Wasm: probe, Config: []byte("b")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.LoadSet(ctx, []Spec{{Name: "a", Wasm: []byte("junk")}}, v1); err == nil {
		t.Fatal("bad reload succeeded")
	}
	release, entered := make(chan struct{}), make(chan struct{})
	chain, err := v1.Chain("a", "b")
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, chain.Then(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	})))
	done := make(chan *http.Response)
	go func() {
		resp, err := http.Get(url + "/pass")
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	<-entered

	v2, err := h.LoadSet(ctx, []Spec{{Name: "a", Wasm: probe, Config: []byte("a2")}, {Name: "b", Wasm: probe, Config: []byte("b")}}, v1)
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Release()
	oldA, _ := v1.Get("a")
	newA, _ := v2.Get("a")
	oldB, _ := v1.Get("b")
	newB, _ := v2.Get("b")
	if oldA == newA || oldB != newB {
		t.Fatal("reload should replace the changed transform and keep the unchanged one")
	}
	v1.Release()
	if oldA.stopped.Err() != nil {
		t.Fatal("old transform closed while a request was still using it")
	}
	close(release)
	resp := <-done
	if resp == nil || resp.StatusCode != 200 || strings.Join(resp.Header.Values("x-chain-resp"), ",") != "b,a1" {
		t.Fatalf("in-flight request across reload: %+v", resp)
	}
	if oldA.stopped.Err() == nil {
		t.Error("old transform still open after its last request")
	}
	if newB.stopped.Err() != nil {
		t.Error("kept transform was closed")
	}
}

// 100 reloads of a changed module leave the process's memory where it was.
func TestReloadsDoNotLeak(t *testing.T) {
	probe := wat(t, "probe.wat")
	h := newTestHost(t)
	ctx := context.Background()
	reload := func(prev *Set, i int) *Set {
		s, err := h.LoadSet(ctx, []Spec{{Name: "a", Wasm: probe, Config: fmt.Appendf(nil, "v%d", i), Settings: Settings{Pool: 8}}}, prev)
		if err != nil {
			t.Fatal(err)
		}
		prev.Release()
		return s
	}
	measure := func() (heap, rss uint64) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		u, err := telemetry.ReadProcessUsage()
		if err != nil {
			t.Fatal(err)
		}
		return ms.HeapInuse, u.RSSBytes
	}
	var set *Set
	for i := range 10 { // warm up caches and pools
		set = reload(set, i)
	}
	heap0, rss0 := measure()
	for i := range 100 {
		set = reload(set, 10+i)
	}
	heap1, rss1 := measure()
	set.Release()
	// Each leaked set would keep 8 instances of at least 64 KiB linear
	// memory each: 100 leaked sets are over 50 MiB.
	const slack = 16 << 20
	if heap1 > heap0+slack || rss1 > rss0+slack {
		t.Errorf("after 100 reloads heap %d -> %d, rss %d -> %d bytes", heap0, heap1, rss0, rss1)
	}
	t.Logf("heap %d -> %d, rss %d -> %d", heap0, heap1, rss0, rss1)
}

// With max_pool above pool, a transform makes instances while every one is
// busy, up to max_pool, and keeps them: what bounds the requests inside it
// at once is max_pool. Past it, a request waits for a free one as before.
func TestPoolGrowsToMaxPoolUnderLoad(t *testing.T) {
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "t", Wasm: wat(t, stampGuest("(drop (local.get 1))")),
		Settings: Settings{Pool: 1, MaxPool: 3, Timeout: units.Duration(100 * time.Millisecond)}})
	entered, release := make(chan struct{}, 8), make(chan struct{})
	url := serve(t, NewChain(tr).Then(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "backend")
	})))
	codes := make(chan int, 3)
	for range 3 {
		go func() {
			resp, err := http.Get(url + "/slow")
			if err != nil {
				t.Error(err)
				codes <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	for i := range 3 {
		select {
		case <-entered:
		case <-time.After(20 * time.Second):
			close(release)
			t.Fatalf("%d of 3 requests got past the transform at once; pool 1, max_pool 3", i)
		}
	}
	// Three instances are busy and max_pool allows no fourth.
	resp, body := get(t, url+"/fast")
	close(release)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("with max_pool instances busy: %d %q, want 503", resp.StatusCode, body)
	}
	for range 3 {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("a request the grown pool served: %d", code)
		}
	}
	if s := tr.Stats(); s.Grown != 2 || s.Busy != 1 || len(tr.pool) != 3 {
		t.Errorf("stats = %+v, idle %d; want 2 grown, 1 busy, 3 idle", s, len(tr.pool))
	}
}

// max_pool is checked with the other settings, and a proxy-wasm filter,
// whose instances are plugins started at load, refuses one that grows.
func TestMaxPoolSettings(t *testing.T) {
	for _, c := range []struct {
		s    Settings
		want string
	}{
		{Settings{Pool: 8, MaxPool: 4}, "max_pool: max_pool 4 is below pool 8"},
		{Settings{MaxPool: 2}, "max_pool: max_pool 2 is below pool 4"},
		{Settings{MaxPool: 5000}, "max_pool: max_pool must be 0..1024, got 5000"},
	} {
		if err := c.s.Validate(); err == nil || err.Error() != c.want {
			t.Errorf("%+v: %v, want %q", c.s, err, c.want)
		}
	}
	if err := (Settings{Pool: 2, MaxPool: 8}).Validate(); err != nil {
		t.Errorf("pool 2, max_pool 8: %v", err)
	}
	h := newTestHost(t)
	_, err := h.Load(context.Background(), Spec{Name: "pw", Wasm: proxyWAT(t, "(i32.const 1024)", ""), Settings: Settings{Pool: 1, MaxPool: 2}})
	if err == nil || !strings.Contains(err.Error(), "max_pool: a proxy-wasm filter's pool does not grow") {
		t.Errorf("a proxy-wasm filter with max_pool 2 over pool 1 loaded: %v", err)
	}
}

// The instance a request makes when the pool grows runs its start function
// within the transform's timeout, as every guest call does: a start that
// loops holds the request no longer than a wait for a free instance would.
func TestGrownInstanceStartMeetsTimeout(t *testing.T) {
	var logs logtest.Buffer
	h := newTestHost(t)
	h.logger = slog.New(slog.NewTextHandler(&logs, nil))
	tr := loadT(t, h, Spec{Name: "t", Wasm: wat(t, stampGuest("(drop (local.get 1))")),
		Settings: Settings{Pool: 1, MaxPool: 2, Timeout: units.Duration(200 * time.Millisecond)}})
	// The instance the pool grows is one whose start loops.
	startsLoopFromNow(t, tr, stampGuest("(drop (local.get 1))"))
	url, _ := holdInstance(t, tr) // the one instance is busy
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url + "/fast")
	if err != nil {
		t.Fatalf("a request whose grown instance's start loops (10 s bound before): %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
	if s := tr.Stats(); s.StartFailures != 1 || s.Timeouts != 0 || s.Busy != 1 || s.Grown != 0 || tr.made.Load() != 1 {
		t.Errorf("stats = %+v, made %d; want 1 failed start, no timeout, 1 busy, none grown, 1 made", s, tr.made.Load())
	}
	if !strings.Contains(logs.String(), "wasm instance failed to start") {
		t.Errorf("no log of the start that overran:\n%s", logs.String())
	}
	// The next request, within the pacing that failure set off (at least
	// failedStartWaits × 200 ms), waits for the busy instance instead of
	// running another start that loops.
	if resp, err := client.Get(url + "/fast"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("the next request: %v %v, want 503", resp, err)
	} else {
		resp.Body.Close()
	}
	if s := tr.Stats(); s.StartFailures != 1 || s.Busy != 2 {
		t.Errorf("stats = %+v; want 1 failed start, 2 busy", s)
	}
}

// Releasing a transform while it replaces a broken instance, whose start
// function loops, stops that start then: the caller of the last Release
// (a reload, the node's shutdown) waited out the 10 s start bound, and
// then a backoff, before.
func TestReleaseStopsAReplacementStart(t *testing.T) {
	h := newTestHost(t)
	trap := strings.Replace(stampGuest("(drop (local.get 1))"), "(i64.const 1))", "unreachable)", 1)
	tr, err := h.Load(context.Background(), Spec{Name: "t", Wasm: wat(t, trap), Settings: Settings{Pool: 1}})
	if err != nil {
		t.Fatal(err)
	}
	startsLoopFromNow(t, tr, trap) // the replacement's start loops
	if resp, _ := get(t, serve(t, NewChain(tr).Then(echoBackend))); resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("a trapping guest: %d, want 500", resp.StatusCode)
	}
	released := make(chan struct{})
	go func() { tr.Release(); close(released) }()
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("Release still waiting 5s later for a replacement instance's start")
	}
}
