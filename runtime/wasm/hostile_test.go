package wasm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"perigee/telemetry"

	"perigee/memtest"
	"perigee/runtime/wasm/meter"
	"perigee/units"
)

// hostileDeadline is the corpus's per-call deadline: long enough that on a
// loaded machine (and under -race) a runtime.GC() started while the guest
// runs has time to finish before the deadline, if the guest lets it.
const hostileDeadline = time.Second

// TestHostileGuests runs the corpus in testdata/hostile. Each guest is
// stopped within twice its deadline, whatever the shape of its code; while
// it runs the Go garbage collector is not held up waiting for it (a
// runtime.GC() started meanwhile returns while the guest still runs: Go
// cannot stop a goroutine inside compiled guest code, so a guest that never
// came back to Go would hold the collection until its end); and the memory
// it took is given back once its instance is discarded.
func TestHostileGuests(t *testing.T) {
	for _, c := range []struct {
		file string
		trap bool // stopped by a trap of its own, not at its deadline
	}{
		{file: "calltree.wat"},
		{file: "indirect.wat"},
		{file: "loop.wat"},
		{file: "hostloop.wat"},
		{file: "lookup.wat"},
		{file: "random.wat"},
		{file: "writev.wat"},
		{file: "poll.wat"},
		{file: "readv.wat"},
		{file: "grow.wat"},
		{file: "fill.wat"},
		{file: "copy.wat"},
		{file: "recursion.wat", trap: true},
	} {
		t.Run(strings.TrimSuffix(c.file, ".wat"), func(t *testing.T) {
			guest := wat(t, "hostile/"+c.file)
			h := newTestHost(t)
			tr := loadT(t, h, Spec{Name: c.file, Wasm: guest, Settings: Settings{Pool: 1, Timeout: units.Duration(hostileDeadline)}})
			srv := httptest.NewServer(NewChain(tr).Then(echoBackend))
			defer srv.Close()
			rss0 := settledRSS(t)

			type result struct {
				status  int
				elapsed time.Duration
				err     error
			}
			done := make(chan result, 1)
			sent := time.Now()
			go func() {
				start := time.Now()
				resp, err := http.Get(srv.URL + "/")
				r := result{elapsed: time.Since(start), err: err}
				if err == nil {
					r.status = resp.StatusCode
					resp.Body.Close()
				}
				done <- r
			}()
			// The guest runs once its instance has left the pool. One that
			// traps by itself may be done before a collection could start.
			for len(tr.pool) > 0 {
				time.Sleep(time.Millisecond)
			}
			var gc time.Duration
			var gcDone bool // before the guest's deadline, so before it was stopped
			if !c.trap {
				time.Sleep(hostileDeadline / 10)
				gcStart := time.Now()
				runtime.GC()
				gc = time.Since(gcStart)
				gcDone = time.Now().Before(sent.Add(hostileDeadline))
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.status != http.StatusInternalServerError {
				t.Errorf("status %d, want 500", r.status)
			}
			if r.elapsed > 2*hostileDeadline {
				t.Errorf("guest stopped after %v, deadline %v", r.elapsed, hostileDeadline)
			}
			if !c.trap && !gcDone {
				t.Errorf("runtime.GC() took %v, until the guest was stopped: the guest held up the Go runtime", gc)
			}
			s := tr.Stats()
			if c.trap && s.Traps != 1 || !c.trap && s.Timeouts != 1 {
				t.Errorf("stats %+v, want one %s", s, map[bool]string{true: "trap", false: "timeout"}[c.trap])
			}
			waitReplaced(t, tr, 1)
			rss1 := settledRSS(t)
			if rss1 > rss0+rssSlack {
				t.Errorf("rss %d -> %d bytes after the guest was discarded", rss0, rss1)
			}
			t.Logf("stopped after %v, runtime.GC() meanwhile %v, rss %d -> %d MiB", r.elapsed.Round(time.Millisecond), gc.Round(time.Microsecond), rss0>>20, rss1>>20)
		})
	}
}

// A storm of trapping requests: each answered 500 or, while the pool is
// being refilled, 503; none waits past its deadline; afterwards the pool is
// full again and neither memory nor goroutines have piled up.
func TestTrapStorm(t *testing.T) {
	guest := wat(t, "hostile/trap.wat")
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "trap", Wasm: guest, Settings: Settings{Pool: 2, Timeout: units.Duration(hostileDeadline)}})
	srv := httptest.NewServer(NewChain(tr).Then(echoBackend))
	defer srv.Close()
	rss0, goroutines0 := settledRSS(t), runtime.NumGoroutine()

	const requests, workers = 300, 4
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range requests / workers {
				start := time.Now()
				resp, err := http.Get(srv.URL + "/")
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if d := time.Since(start); d > 2*hostileDeadline {
					t.Errorf("worker %d: a request took %v", w, d)
				}
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if statuses[500]+statuses[503] != requests || statuses[500] == 0 {
		t.Errorf("statuses %v, want %d answered 500 or 503", statuses, requests)
	}
	s := tr.Stats()
	waitReplaced(t, tr, s.Traps)
	if len(tr.pool) != 2 {
		t.Errorf("%d idle instances after the storm, want 2", len(tr.pool))
	}
	rss1 := settledRSS(t)
	if rss1 > rss0+rssSlack {
		t.Errorf("rss %d -> %d bytes after %d traps", rss0, rss1, s.Traps)
	}
	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	if n := runtime.NumGoroutine(); n > goroutines0+8 {
		t.Errorf("%d goroutines after the storm, %d before", n, goroutines0)
	}
	t.Logf("statuses %v, %d traps, rss %d -> %d MiB", statuses, s.Traps, rss0>>20, rss1>>20)
}

// A guest that reads the request body from a client that stopped sending
// sits in a host call, where fuel is not spent: the call's deadline still
// reaches it.
func TestBlockedHostCallMeetsDeadline(t *testing.T) {
	guest := wat(t, "hostile/readbody.wat")
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "readbody", Wasm: guest, Settings: Settings{Pool: 1, Timeout: units.Duration(hostileDeadline)}})
	srv := httptest.NewServer(NewChain(tr).Then(echoBackend))
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nthe first bytes and no more")
	conn.SetReadDeadline(time.Now().Add(10 * hostileDeadline))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the client stalls: %v", err)
	}
	resp.Body.Close()
	if elapsed := time.Since(start); resp.StatusCode != 500 || elapsed > 2*hostileDeadline {
		t.Errorf("status %d after %v, want 500 within %v", resp.StatusCode, elapsed, 2*hostileDeadline)
	}
	if s := tr.Stats(); s.Timeouts != 1 {
		t.Errorf("stats %+v, want one timeout", s)
	}
}

// rssSlack is what RSS may grow by across a hostile case: far below the
// 64 MiB a guest's memory may reach or the hundreds of megabytes wazero's
// stack would reach unmetered, above what -race's shadow memory adds (the
// recursion case's stack, about 17 MiB).
const rssSlack = 32 << 20

// waitReplaced waits for the pool to have replaced n discarded instances.
func waitReplaced(t *testing.T, tr *Transform, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); tr.Stats().Replaced < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d instances replaced", tr.Stats().Replaced, n)
		}
	}
}

// settledRSS is the process's resident size once garbage is collected and
// returned to the system.
func settledRSS(t *testing.T) uint64 {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	u, err := telemetry.ReadProcessUsage()
	if err != nil {
		t.Fatal(err)
	}
	return u.RSSBytes
}

// The same over HTTP/2, where the deadline that ends the wait is the
// stream's, not the connection's.
func TestBlockedHostCallMeetsDeadlineHTTP2(t *testing.T) {
	guest := wat(t, "hostile/readbody.wat")
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "readbody", Wasm: guest, Settings: Settings{Pool: 1, Timeout: units.Duration(hostileDeadline)}})
	srv := httptest.NewUnstartedServer(NewChain(tr).Then(echoBackend))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()

	body, stall := io.Pipe()
	defer stall.Close()
	go stall.Write([]byte("the first bytes and no more"))
	client := srv.Client()
	client.Timeout = 10 * hostileDeadline
	start := time.Now()
	resp, err := client.Post(srv.URL, "text/plain", body)
	if err != nil {
		t.Fatalf("no answer while the client stalls: %v", err)
	}
	resp.Body.Close()
	if elapsed := time.Since(start); resp.ProtoMajor != 2 || resp.StatusCode != 500 || elapsed > 2*hostileDeadline {
		t.Errorf("%s %d after %v, want HTTP/2 500 within %v", resp.Proto, resp.StatusCode, elapsed, 2*hostileDeadline)
	}
}

// A guest that leaves the body to upstream holds its instance while
// upstream reads it from a slow client: between its two calls, for as long
// as the rest of the chain runs. So the route's body timeout, which ends
// that read, is what bounds the hold (here a read deadline the handler
// sets, as the proxy does), over HTTP/1.1.
func TestSlowBodyHoldsInstanceOnlyUntilBodyTimeout(t *testing.T) {
	const bodyTimeout = 300 * time.Millisecond
	h := newTestHost(t)
	tr := loadT(t, h, Spec{Name: "pass", Wasm: bufferGuest(t, 0, false), Settings: Settings{Pool: 1, Timeout: units.Duration(20 * bodyTimeout)}})
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyTimeout))
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, "body too slow", http.StatusRequestTimeout)
			return
		}
		io.WriteString(w, "backend")
	})
	srv := httptest.NewServer(NewChain(tr).Then(upstream))
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
	for tr.Stats().Calls == 0 {
		time.Sleep(time.Millisecond)
	}
	// The only instance is held by the slow request; this one waits for it.
	resp, body := get(t, srv.URL)
	elapsed := time.Since(start)
	if resp.StatusCode != 200 || body != "backend" || elapsed > 2*bodyTimeout+time.Second {
		t.Errorf("second request: %d %q after %v, want 200 soon after the %v body timeout", resp.StatusCode, body, elapsed, bodyTimeout)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	slow, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	slow.Body.Close()
	if slow.StatusCode != http.StatusRequestTimeout {
		t.Errorf("slow client got %d, want 408", slow.StatusCode)
	}
}

// A small module whose compiling would take minutes and gigabytes (one
// br_table of 262,144 targets in 256 KiB: 12 s and 600 MiB; a million
// took 3 min 45 s and 2.7 GB) is refused before wazero compiles it, with
// an error that says why.
func TestHugeBrTableIsRefusedBeforeCompiling(t *testing.T) {
	guest := wat(t, `(module
		(memory (export "memory") 1)
		(func (export "handle_request") (result i64) (i64.const 1))
		(func (export "handle_response") (param i32 i32))
		(func (param i32) (block $a (br_table `+strings.Repeat("$a ", 1<<18+1)+`(local.get 0)))))`)
	h := newTestHost(t)
	runtime.GC()
	before := allocated()
	start := time.Now()
	tr, err := h.Load(context.Background(), Spec{Name: "brtable", Wasm: guest, Settings: Settings{Pool: 1}})
	took, grown := time.Since(start), allocated()-before
	if tr != nil {
		tr.Release()
	}
	if err == nil || !strings.Contains(err.Error(), "br_table of 262144 targets") {
		t.Errorf("load: %v, want an error naming the br_table", err)
	}
	if grown > 64<<20 {
		t.Errorf("loading allocated %d MiB", grown>>20)
	}
	t.Logf("refused after %v, %d MiB allocated: %v", took, grown>>20, err)
}

// Tables live outside the memory cap, and a module may declare many: 64
// tables of a million elements in 412 bytes took 513 MiB of heap per
// instance, and table.grow could take as much. The tables of a module
// together hold at most meter.MaxTable elements.
func TestTablesTogetherAreBounded(t *testing.T) {
	h := newTestHost(t)
	many := wat(t, `(module (memory (export "memory") 1)
		(func (export "handle_request") (result i64) (i64.const 1))
		(func (export "handle_response") (param i32 i32))`+strings.Repeat("(table 1048576 funcref)\n", 64)+")")
	runtime.GC()
	before := memtest.LiveHeap()
	tr, err := h.Load(context.Background(), Spec{Name: "tables", Wasm: many, Settings: Settings{Pool: 1}})
	grown := int64(memtest.LiveHeap()) - int64(before)
	if tr != nil {
		tr.Release()
	}
	if err == nil || !strings.Contains(err.Error(), "tables of 67108864 elements") {
		t.Errorf("64 full tables: %v, want an error naming their size", err)
	}
	if grown > 32<<20 {
		t.Errorf("loading grew the heap by %d MiB", grown>>20)
	}

	// Two tables that each may grow to the limit: together they stop at it.
	grow := wat(t, `(module (memory (export "memory") 1)
		(table $a 0 funcref) (table $b 0 funcref)
		(func (export "handle_request") (result i64)
			;; the first table takes all it may; the second then gets nothing
			(if (i32.eq (table.grow $a (ref.null func) (i32.const 1048576)) (i32.const -1)) (then unreachable))
			(if (i32.ne (table.grow $b (ref.null func) (i32.const 1)) (i32.const -1)) (then unreachable))
			(i64.const 1))
		(func (export "handle_response") (param i32 i32)))`)
	tr = loadT(t, h, Spec{Name: "grow", Wasm: grow, Settings: Settings{Pool: 1, Timeout: units.Duration(10 * time.Second)}})
	if resp, _ := get(t, serve(t, NewChain(tr).Then(echoBackend))); resp.StatusCode != 200 {
		t.Errorf("two growing tables: status %d, want 200 (the second refused its growth)", resp.StatusCode)
	}
}

// What a module declares costs heap outside its memory cap, per instance
// (globals, element and data segments, copied into each) or for as long
// as the transform runs (each function's compiled form and definition):
// 1M globals in 5 MiB took 88 MiB of heap per instance, a passive element
// segment of 4M functions in 4 MiB 160 MiB, and 1M empty functions in
// 4 MiB 330 MiB. Past the meter's bounds the module is refused, before
// compiling, with an error naming what it declared too much of.
func TestModuleDeclarationsAreBounded(t *testing.T) {
	h := newTestHost(t)
	for name, c := range map[string]struct{ decls, want string }{
		"functions":        {strings.Repeat("(func)\n", meter.MaxFunctions), "functions"},
		"globals":          {strings.Repeat("(global i32 (i32.const 0))\n", 1<<20), "globals"},
		"element items":    {"(elem func " + strings.Repeat("$f ", 2<<20) + ")", "element segments"},
		"element segments": {strings.Repeat("(elem func $f)\n", 1<<20), "element segments"},
		"data segments":    {strings.Repeat("(data \"\")\n", 2<<20), "data segments"},
	} {
		t.Run(name, func(t *testing.T) {
			m := wat(t, `(module (memory (export "memory") 1)
				(func $f (export "handle_request") (result i64) (i64.const 1))
				(func (export "handle_response") (param i32 i32))`+c.decls+")")
			grown, err := loadPeak(h, m)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("a module of %d KiB: %v, want an error naming its %s", len(m)>>10, err, c.want)
			}
			if grown > 32<<20 {
				t.Errorf("loading a module of %d KiB grew the heap by %d MiB", len(m)>>10, grown>>20)
			}
		})
	}
}

// loadPeak loads wasm with a pool of one and releases it: how far the
// heap grew above its live size meanwhile, and the error.
func loadPeak(h *Host, wasm []byte) (peak int64, err error) {
	peak = memtest.PeakGrowthDuring(func() {
		var tr *Transform
		if tr, err = h.Load(context.Background(), Spec{Name: "guest", Wasm: wasm, Settings: Settings{Pool: 1}}); tr != nil {
			tr.Release()
		}
	})
	return peak, err
}

// localsGuest is an http-wasm module with funcs more functions, each
// declaring locals i64 locals in one group: 6 bytes for any count.
func localsGuest(funcs int, locals uint32) []byte {
	return bodiesGuest(funcs, append(binary.AppendUvarint([]byte{1}, uint64(locals)), 0x7e, 0x0b))
}

// bodiesGuest is an http-wasm module with funcs more functions of type
// () -> (), each of the code body.
func bodiesGuest(funcs int, body []byte) []byte {
	u32 := binary.AppendUvarint
	section := func(m []byte, id byte, body []byte) []byte {
		return append(u32(append(m, id), uint64(len(body))), body...)
	}
	m := []byte("\x00asm\x01\x00\x00\x00")
	// () -> i64, (i32 i32) -> (), () -> ()
	m = section(m, 1, []byte{3, 0x60, 0, 1, 0x7e, 0x60, 2, 0x7f, 0x7f, 0, 0x60, 0, 0})
	m = section(m, 3, append(append(u32(nil, uint64(funcs+2)), 0, 1), bytes.Repeat([]byte{2}, funcs)...))
	m = section(m, 5, []byte{1, 0, 1})
	var exports []byte
	for i, name := range []string{"memory", "handle_request", "handle_response"} {
		kind, index := byte(0), byte(i-1)
		if i == 0 {
			kind, index = 2, 0
		}
		exports = append(append(u32(exports, uint64(len(name))), name...), kind, index)
	}
	m = section(m, 7, append([]byte{3}, exports...))
	code := append(u32(nil, uint64(funcs+2)), 4, 0, 0x42, 1, 0x0b, 2, 0, 0x0b)
	for range funcs {
		code = append(u32(code, uint64(len(body))), body...)
	}
	return section(m, 10, code)
}

// Locals are declared as counts: 64 functions of a million locals each, a
// module of 604 bytes, took 532 MiB of heap to compile (256 of them, 2
// KiB, took 2 GiB), since wazero keeps a type for each local and its
// compiler works on each. Past meter.MaxLocals in all the module is
// refused before compiling.
func TestModuleLocalsAreBounded(t *testing.T) {
	h := newTestHost(t)
	guest := localsGuest(64, meter.MaxStack-64)
	peak, err := loadPeak(h, guest)
	if err == nil || !strings.Contains(err.Error(), "locals in all") {
		t.Errorf("64 functions of a million locals: %v, want an error naming the locals", err)
	}
	if peak > 32<<20 {
		t.Errorf("loading a module of %d bytes took %d MiB of heap", len(guest), peak>>20)
	}
	// A few such functions are within the bound, and load.
	loadT(t, h, Spec{Name: "few", Wasm: localsGuest(2, meter.MaxStack-64), Settings: Settings{Pool: 1}}).Release()
}

// A function's compiling takes about 50 times its size in heap, at once:
// one of 8 MiB took 403 MiB. A function past meter.MaxBody (70 times
// stock Go's largest) is refused before compiling.
func TestHugeFunctionIsRefusedBeforeCompiling(t *testing.T) {
	// One i32 local, then local.set 0 (i32.add (local.get 0) (i32.const 1))
	// for 8 MiB.
	body := append([]byte{1, 1, 0x7f}, bytes.Repeat([]byte{0x20, 0, 0x41, 1, 0x6a, 0x21, 0}, 8<<20/7)...)
	guest := bodiesGuest(1, append(body, 0x0b))
	peak, err := loadPeak(newTestHost(t), guest)
	if err == nil || !strings.Contains(err.Error(), "function 2: body of 8388608 bytes") {
		t.Errorf("a function of 8 MiB: %v, want an error naming its size", err)
	}
	if peak > 64<<20 {
		t.Errorf("loading a module of %d MiB took %d MiB of heap", len(guest)>>20, peak>>20)
	}
}
