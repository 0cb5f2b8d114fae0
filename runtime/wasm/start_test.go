package wasm

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"perigee/bench/machine"
	"perigee/logtest"
	"perigee/units"
)

// withStart is guest, a stampGuest, with an _initialize of body.
func withStart(guest, body string) string {
	return strings.Replace(guest,
		`(memory (export "memory") 1)`, `(memory (export "memory") 1) (func (export "_initialize") `+body+`)`, 1)
}

// withLoopingStart is guest with an _initialize that never returns.
func withLoopingStart(guest string) string { return withStart(guest, "(loop $l (br $l))") }

// startsFromNow makes every instance tr starts from now on one of src (a
// WAT module): a start function may fail only some of the time (it can
// read the clock or randomness), and so pass its load.
func startsFromNow(t *testing.T, tr *Transform, src string) {
	t.Helper()
	compiled, _, err := tr.host.compileGuest(context.Background(), tr.rt, wat(t, src), "")
	if err != nil {
		t.Fatal(err)
	}
	tr.compiled = compiled
}

// startsLoopFromNow makes every instance tr starts from now on one whose
// start loops: guest, the stampGuest tr loaded, withLoopingStart.
func startsLoopFromNow(t *testing.T, tr *Transform, guest string) {
	t.Helper()
	startsFromNow(t, tr, withLoopingStart(guest))
}

// holdInstance serves tr's chain in front of a backend whose /slow waits
// for release (or the test's end), and returns once a request to /slow
// holds one of tr's instances.
func holdInstance(t *testing.T, tr *Transform) (url string, release func()) {
	entered, held := make(chan struct{}), make(chan struct{})
	release = sync.OnceFunc(func() { close(held) })
	url = serve(t, NewChain(tr).Then(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-held
		}
		io.WriteString(w, "backend")
	})))
	t.Cleanup(release) // before the server's Close, which waits for /slow
	go http.Get(url + "/slow")
	<-entered
	return url, release
}

// slowStart is stampGuest with an _initialize that spins on the monotonic
// clock for d, then returns: a start that succeeds, slowly.
func slowStart(d time.Duration) string {
	return strings.Replace(stampGuest("(drop (local.get 1))"), `(memory (export "memory") 1)`, `
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func $now (result i64)
    (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 64)))
    (i64.load (i32.const 64)))
  (func (export "_initialize") (local $end i64)
    (local.set $end (i64.add (call $now) (i64.const `+strconv.FormatInt(d.Nanoseconds(), 10)+`)))
    (loop $spin (br_if $spin (i64.lt_u (call $now) (local.get $end)))))`, 1)
}

// loadWithin runs Load and fails the test if it has not returned by bound
// (a bound on a hang, not a timing measure).
func loadWithin(t *testing.T, h *Host, spec Spec, bound time.Duration) (*Transform, error) {
	t.Helper()
	type result struct {
		tr  *Transform
		err error
	}
	done := make(chan result, 1)
	go func() {
		tr, err := h.Load(context.Background(), spec)
		done <- result{tr, err}
	}()
	select {
	case r := <-done:
		if r.tr != nil {
			t.Cleanup(r.tr.Release)
		}
		return r.tr, r.err
	case <-time.After(bound):
		t.Fatalf("Load of %s still running %v later", spec.Name, bound)
		return nil, nil
	}
}

// A start that never returns fails the load at init_timeout, for either
// ABI: the load waited a fixed 10 s before, whatever the transform said.
func TestInitTimeoutBoundsAStartAtLoad(t *testing.T) {
	h := newTestHost(t)
	for name, wasm := range map[string][]byte{
		"http-wasm _initialize": wat(t, withLoopingStart(stampGuest("(drop (local.get 1))"))),
		"proxy_on_vm_start": proxyWAT(t, "(i32.const 1024)",
			`(func (export "proxy_on_vm_start") (param i32 i32) (result i32) (loop $l (br $l)) (i32.const 1))`),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loadWithin(t, h, Spec{Name: "t", Wasm: wasm,
				Settings: Settings{Pool: 1, InitTimeout: units.Duration(300 * time.Millisecond)}}, 5*time.Second)
			if err == nil || !strings.Contains(err.Error(), "init_timeout 300ms") {
				t.Errorf("a start that loops: %v, want an error naming init_timeout 300ms", err)
			}
			t.Log(err)
		})
	}
}

// init_timeout is range-checked with the other settings.
func TestInitTimeoutSettings(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "init_timeout: init_timeout must be 1ms..1m0s, got -1s"},
		{time.Microsecond, "init_timeout: init_timeout must be 1ms..1m0s, got 1µs"},
		{2 * time.Minute, "init_timeout: init_timeout must be 1ms..1m0s, got 2m0s"},
	} {
		if err := (Settings{InitTimeout: units.Duration(c.d)}).Validate(); err == nil || err.Error() != c.want {
			t.Errorf("init_timeout %v: %v, want %q", c.d, err, c.want)
		}
	}
	if s := (Settings{}).withDefaults(); s.InitTimeout.D() != DefaultInitTimeout {
		t.Errorf("default init_timeout %v, want %v", s.InitTimeout.D(), DefaultInitTimeout)
	}
}

// A pool's starts at load take init_timeout together, not each: 32 starts
// of 400 ms each, one after the other, held a load (and so a reload) for
// 13 s under an init_timeout of 1 s; with 1024 instances of a start just
// under 10 s, for hours.
func TestLoadOfAPoolIsBoundedInAll(t *testing.T) {
	h := newTestHost(t)
	_, err := loadWithin(t, h, Spec{Name: "slow", Wasm: wat(t, slowStart(400*time.Millisecond)),
		Settings: Settings{Pool: 32, InitTimeout: units.Duration(time.Second)}}, 8*time.Second)
	if err == nil || !strings.Contains(err.Error(), "init_timeout 1s") {
		t.Errorf("32 starts of 400ms under init_timeout 1s: %v, want an error naming init_timeout 1s", err)
	}
	t.Log(err)
}

// An instance the pool grows for a request starts within init_timeout
// when that is shorter than the transform's timeout: the start that loops
// is stopped then, and the request goes on waiting, within its timeout,
// for an instance to come back.
func TestGrownInstanceStartMeetsInitTimeout(t *testing.T) {
	tr := loadT(t, newTestHost(t), Spec{Name: "t", Wasm: wat(t, stampGuest("(drop (local.get 1))")),
		Settings: Settings{Pool: 1, MaxPool: 2, Timeout: units.Duration(time.Minute), InitTimeout: units.Duration(200 * time.Millisecond)}})
	startsLoopFromNow(t, tr, stampGuest("(drop (local.get 1))"))
	url, release := holdInstance(t, tr)
	fast := make(chan int, 1)
	go func() {
		resp, err := http.Get(url + "/fast")
		if err != nil {
			fast <- 0
			return
		}
		resp.Body.Close()
		fast <- resp.StatusCode
	}()
	for end := time.Now().Add(10 * time.Second); tr.Stats().StartFailures == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the grown instance's start still running 10s later (init_timeout 200ms, timeout 1m)")
		}
	}
	release()
	if code := <-fast; code != http.StatusOK {
		t.Errorf("the request that waited on: %d, want 200 from the instance that came back", code)
	}
}

// Replacements whose start always loops are paced: one start at a time
// for the transform, however many instances it owes, each followed by a
// wait of at least failedStartWaits times the start's run. Before, each
// discarded instance had a refill of its own, retried after at most 5 s:
// with a 10 s start, two thirds of a core for each.
func TestFailingReplacementStartsArePaced(t *testing.T) {
	var logs logtest.Buffer
	h := newTestHost(t)
	h.logger = slog.New(slog.NewTextHandler(&logs, nil))
	const initTimeout = 200 * time.Millisecond
	trap := strings.Replace(stampGuest("(drop (local.get 1))"), "(i64.const 1))", "unreachable)", 1)
	tr := loadT(t, h, Spec{Name: "t", Wasm: wat(t, trap), Settings: Settings{Pool: 2, InitTimeout: units.Duration(initTimeout)}})
	startsLoopFromNow(t, tr, trap)
	url := serve(t, NewChain(tr).Then(echoBackend))
	for range 2 { // both instances trap and are discarded
		if resp, _ := get(t, url); resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("a trapping guest: %d, want 500", resp.StatusCode)
		}
	}
	for end := time.Now().Add(5 * time.Second); tr.Stats().StartFailures == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("no replacement start failed in 5s")
		}
	}
	const window = 3 * time.Second
	cpu0, starts0 := machine.SelfCPU(), tr.Stats().StartFailures
	time.Sleep(window)
	cpu, starts := machine.SelfCPU()-cpu0, tr.Stats().StartFailures-starts0
	// One start each (1+failedStartWaits) × init_timeout, and the ones
	// running at either end of the window.
	if most := uint64(window/((1+failedStartWaits)*initTimeout)) + 2; starts > most {
		t.Errorf("%d failed starts in %v, want at most %d", starts, window, most)
	}
	// A tenth of a core, twice over for what else the process runs.
	if cpu > window/5 {
		t.Errorf("the process used %v of CPU in %v of failing starts, want at most %v", cpu, window, window/5)
	}
	if !strings.Contains(logs.String(), "wasm instance failed to start") {
		t.Errorf("no log of the failing starts:\n%s", logs.String())
	}
	t.Logf("%d failed starts, %v of CPU in %v", starts, cpu, window)
}

// While starts are failing, requests that would grow the pool at once
// run one start between them, when the backoff ends, not one each.
func TestFailingGrowthStartsOneAtATime(t *testing.T) {
	tr := loadT(t, newTestHost(t), Spec{Name: "t", Wasm: wat(t, stampGuest("(drop (local.get 1))")),
		Settings: Settings{Pool: 1, MaxPool: 8, Timeout: units.Duration(time.Second), InitTimeout: units.Duration(100 * time.Millisecond)}})
	startsLoopFromNow(t, tr, stampGuest("(drop (local.get 1))"))
	url, _ := holdInstance(t, tr)
	wait := func(n int) {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				if resp, err := http.Get(url + "/fast"); err == nil {
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
	}
	wait(1) // the first start fails, and paces the next
	for time.Now().Before(tr.starts.next()) {
		time.Sleep(time.Millisecond)
	}
	wait(6)
	if s := tr.Stats(); s.StartFailures != 2 || s.Busy != 7 {
		t.Errorf("stats = %+v; want 2 failed starts (one before the backoff, one after), 7 busy", s)
	}
}

// A start that fails as the pool grows is a failed start like a
// replacement's: counted in start_failures, not as a guest trap, and
// logged as "wasm instance failed to start" with the bound it ran under,
// at most startLogBurst lines a minute however many requests it fails.
// Before, each was a trap too, and a line of its own.
func TestFailingGrowthStartIsAStartFailure(t *testing.T) {
	var logs logtest.Buffer
	h := newTestHost(t)
	h.logger = slog.New(slog.NewTextHandler(&logs, nil))
	guest := stampGuest("(drop (local.get 1))")
	tr := loadT(t, h, Spec{Name: "t", Wasm: wat(t, guest),
		Settings: Settings{Pool: 1, MaxPool: 2, Timeout: units.Duration(100 * time.Millisecond), InitTimeout: units.Duration(20 * time.Millisecond)}})
	startsFromNow(t, tr, withStart(guest, "unreachable"))
	url, _ := holdInstance(t, tr) // the one instance is busy: each request would grow the pool
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for end := time.Now().Add(10 * time.Second); tr.Stats().StartFailures <= startLogBurst && time.Now().Before(end); {
				if resp, err := http.Get(url + "/fast"); err == nil {
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	s := tr.Stats()
	if s.StartFailures <= startLogBurst || s.Traps != 0 || s.Timeouts != 0 {
		t.Errorf("stats = %+v; want more than %d failed starts, no trap, no timeout", s, startLogBurst)
	}
	out := logs.String()
	if lines := strings.Count(out, "wasm instance failed to start") + strings.Count(out, "phase=start"); lines > startLogBurst {
		t.Errorf("%d failed starts logged %d lines, want at most %d:\n%s", s.StartFailures, lines, startLogBurst, out)
	}
	if !strings.Contains(out, "bound=20ms") {
		t.Errorf("no line names the start's bound, init_timeout 20ms:\n%s", out)
	}
}
