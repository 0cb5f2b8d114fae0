package lua

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The hostile-policy corpus: each file in testdata/hostile defines
// evaluate() and says in its header what must happen to it:
//
//	-- expect: timeout | alloc | limit (either) | ok | error [text the message contains]
//	-- calls: N   (evaluate is called until it fails, at most N times)
//
// Under the limits below every call must end within twice the deadline,
// with a short message naming the script, the process's peak RSS must stay
// within the budget plus rssMargin, and the VM must answer a call after.
// The deadline is longer than a policy's usual 100 ms so that the bound
// holds on a loaded machine, where a goroutine can wait tens of
// milliseconds to run (and four times longer under the race detector).
const (
	hostileTimeout = 250 * time.Millisecond * raceSlowdown
	hostileBudget  = 64 << 20
	rssMargin      = 48 << 20
)

type hostileCase struct {
	expect string // timeout, alloc, limit, ok or error
	text   string // for error: what the message contains
	calls  int
}

func readHostile(t *testing.T, path string) (hostileCase, string) {
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := hostileCase{calls: 1}
	sc := bufio.NewScanner(bytes.NewReader(src))
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "-- ")
		if !ok {
			break
		}
		if v, ok := strings.CutPrefix(line, "expect: "); ok {
			c.expect, c.text, _ = strings.Cut(v, " ")
		}
		if v, ok := strings.CutPrefix(line, "calls: "); ok {
			if c.calls, err = strconv.Atoi(v); err != nil {
				t.Fatalf("%s: calls: %v", path, err)
			}
		}
	}
	if c.expect == "" {
		t.Fatalf("%s: no expect header", path)
	}
	return c, string(src)
}

func TestHostilePolicies(t *testing.T) {
	files, err := filepath.Glob("testdata/hostile/*.lua")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(strings.TrimSuffix(name, ".lua"), func(t *testing.T) {
			c, src := readHostile(t, path)
			rss := startRSS(t)
			vm := New(Options{Limits: Limits{Timeout: hostileTimeout, AllocBytes: hostileBudget}})
			defer vm.Close()
			vm.Register("sink", func(args []any) ([]any, error) {
				return []any{float64(len(fmt.Sprint(args...)))}, nil
			})
			bounded := func(what string, f func() error) error {
				start := time.Now()
				err := f()
				if took := time.Since(start); took > 2*hostileTimeout {
					t.Errorf("%s took %v, over twice the deadline of %v (err: %.200v)", what, took, hostileTimeout, err)
				}
				return err
			}
			err := bounded("load", func() error { return vm.Load(context.Background(), name, src) })
			calls := 0
			for ; err == nil && calls < c.calls; calls++ {
				err = bounded(fmt.Sprintf("call %d", calls+1), func() error {
					_, err := vm.Call(context.Background(), "evaluate")
					return err
				})
			}
			t.Logf("%d calls", calls)
			check(t, c, name, err)
			runtime.GC() // no finalizer a script set may run, or stall this
			rss.check(t, hostileBudget+rssMargin)
			if err := vm.Load(context.Background(), "probe.lua", "function probe() return 42 end"); err != nil {
				t.Fatalf("VM unusable afterwards: %v", err)
			}
			if out, err := vm.Call(context.Background(), "probe"); err != nil || len(out) != 1 || out[0] != 42.0 {
				t.Fatalf("VM unusable afterwards: %v, %v", out, err)
			}
		})
	}
}

func check(t *testing.T, c hostileCase, name string, err error) {
	t.Helper()
	if c.expect == "ok" {
		if err != nil {
			t.Fatalf("err = %.300v, want none", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %s %s", c.expect, c.text)
	}
	var le *Error
	if !errors.As(err, &le) {
		t.Fatalf("err = %.300v (%T), want *Error", err, err)
	}
	if !strings.HasPrefix(le.Msg, name+":") {
		t.Errorf("message %.300q does not name %s", le.Msg, name)
	}
	if len(le.Msg) > maxMessageBytes {
		t.Errorf("message of %d bytes, over %d", len(le.Msg), maxMessageBytes)
	}
	switch c.expect {
	case "timeout":
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %.300v, want ErrTimeout", err)
		}
	case "alloc":
		if !errors.Is(err, ErrAllocation) {
			t.Fatalf("err = %.300v, want ErrAllocation", err)
		}
	case "limit":
		if !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrAllocation) {
			t.Fatalf("err = %.300v, want ErrTimeout or ErrAllocation", err)
		}
	case "error":
		if !strings.Contains(le.Msg, c.text) {
			t.Fatalf("err = %.300v, want it to contain %q", err, c.text)
		}
	default:
		t.Fatalf("unknown expectation %q", c.expect)
	}
}

// rssWatch measures the process's peak RSS over a test case, from the
// kernel's high-water mark, reset at the start.
type rssWatch struct{ base int64 }

func startRSS(t *testing.T) rssWatch {
	runtime.GC()
	debug.FreeOSMemory()
	// Writing 5 to clear_refs resets VmHWM to the current RSS.
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Logf("cannot reset the RSS peak (%v); the bound is checked against the process's peak", err)
	}
	return rssWatch{base: procStatus(t, "VmRSS")}
}

func (w rssWatch) check(t *testing.T, bound int64) {
	t.Helper()
	peak := procStatus(t, "VmHWM")
	t.Logf("RSS peak %d MiB over a base of %d MiB", (peak-w.base)>>20, w.base>>20)
	if !raceEnabled && peak-w.base > bound {
		t.Errorf("RSS rose by %d MiB, over the bound of %d MiB", (peak-w.base)>>20, bound>>20)
	}
}

// procStatus reads a kB field of /proc/self/status, in bytes.
func procStatus(t *testing.T, field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}
