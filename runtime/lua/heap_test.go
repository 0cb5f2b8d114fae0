package lua

import (
	"context"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"perigee/memtest"
)

func TestStateOverBudgetIsRebuilt(t *testing.T) {
	vm := New(Options{Limits: Limits{Timeout: 5 * time.Second, AllocBytes: 8 << 20}})
	defer vm.Close()
	vm.Register("twice", func(args []any) ([]any, error) { return []any{2 * args[0].(float64)}, nil })
	vm.SetGlobal("state", map[string]any{"n": 1})
	if err := vm.Load(context.Background(), "keep.lua", `
kept = {}
loads = (loads or 0) + 1
function keep() kept[#kept + 1] = string.rep("x", 2^20) return #kept end
function churn() local s for i = 1, 4 do s = string.rep("y", 2^19) .. i end return #s end
function info() return loads, state.n, twice(21), #kept end`); err != nil {
		t.Fatal(err)
	}
	// Garbage is not kept: a call that allocates much and keeps little
	// never trips the check, however often it runs.
	for range 50 {
		if _, err := vm.Call(context.Background(), "churn"); err != nil {
			t.Fatalf("churn: %v", err)
		}
	}
	var err error
	calls := 0
	for ; err == nil && calls < 20; calls++ {
		_, err = vm.Call(context.Background(), "keep")
	}
	if !errors.Is(err, ErrAllocation) || !strings.HasPrefix(err.Error(), "keep.lua: after keep the state holds over 8 MiB") {
		t.Fatalf("after %d calls: err = %v, want the state over budget", calls, err)
	}
	if calls < 7 || calls > 10 {
		t.Errorf("stopped after %d calls of 1 MiB each, want about 8", calls)
	}
	// The rebuilt state ran the script once more, with the functions and
	// globals set from Go, and without what the old one kept.
	out, err := vm.Call(context.Background(), "info")
	if want := []any{1.0, 1.0, 42.0, 0.0}; err != nil || !reflect.DeepEqual(out, want) {
		t.Fatalf("info after rebuild = %v, %v; want %v", out, err, want)
	}
}

// The walk stops at the budget, whatever the state holds, and counts a
// string held in many places once.
func TestLiveBytesStopsAtLimit(t *testing.T) {
	vm := load(t, Options{}, "walk.lua", `
s = string.rep("z", 2^20)
many = {}
for i = 1, 1000 do many[i] = s end
nested = {}
local t = nested
for i = 1, 20000 do t.next = {} t = t.next end`)
	if n, _ := vm.liveBytes(1<<40, time.Time{}); n < 1<<20 || n > 40<<20 {
		t.Errorf("live estimate %d bytes, want about 1 MiB of string and 20000 tables", n)
	}
	if n, _ := vm.liveBytes(64<<10, time.Time{}); n > 64<<10+1<<20+tableBytes {
		t.Errorf("a walk limited to 64 KiB went on to %d bytes", n)
	}
}

// A script whose top level keeps more than the budget is refused, and the
// VM goes on without it.
func TestLoadOverBudgetIsRefused(t *testing.T) {
	vm := New(Options{Limits: Limits{Timeout: 5 * time.Second, AllocBytes: 8 << 20}})
	defer vm.Close()
	if err := vm.Load(context.Background(), "small.lua", "function ok() return 1 end"); err != nil {
		t.Fatal(err)
	}
	err := vm.Load(context.Background(), "big.lua", `
kept = {}
for i = 1, 10 do kept[i] = string.rep("x", 2^20) end
function big() return #kept end`)
	if !errors.Is(err, ErrAllocation) {
		t.Fatalf("load: %v, want ErrAllocation", err)
	}
	if vm.HasFunc("big") {
		t.Error("the refused script's function is defined")
	}
	for range 3 {
		if out, err := vm.Call(context.Background(), "ok"); err != nil || out[0] != 1.0 {
			t.Fatalf("ok = %v, %v", out, err)
		}
	}
}

// What a state holds where the walk did not look still counts: every call
// below keeps 4 MiB out of sight of a walk of the globals, and must meet
// ErrAllocation before the heap holds much more than the budget.
func TestHiddenHoldingsCountTowardTheBudget(t *testing.T) {
	const budget = 16 << 20
	for name, src := range map[string]string{
		"gmatch iterators":        `its = {} function evaluate() for i = 1, 4 do its[#its + 1] = string.gmatch(string.rep("x", 2^20 - 16) .. #its, "x") end end`,
		"number metatable":        `function evaluate() local mt = getmetatable(0) or {} setmetatable(0, mt) for i = 1, 4 do mt[#mt + 1] = string.rep("x", 2^20 - 16) .. #mt end end`,
		"function metatable":      `function evaluate() local mt = getmetatable(print) or {} setmetatable(print, mt) for i = 1, 4 do mt[#mt + 1] = string.rep("x", 2^20 - 16) .. #mt end end`,
		"compiled functions":      `fns = {} function evaluate() for i = 1, 2 do fns[#fns + 1] = loadstring(string.rep("function f() end ", 125)) end end`,
		"chunk names":             `fns = {} function evaluate() for i = 1, 4 do fns[#fns + 1] = loadstring("return 1", string.rep("n", 2^20 - 16) .. #fns) end end`,
		"deleted string keys":     `t, n = {}, 0 function evaluate() for i = 1, 4 do n = n + 1 local k = string.rep("k", 2^20 - 16) .. n t[k] = true t[k] = nil end end`,
		"deleted table keys":      `t, n = {}, 0 function evaluate() for i = 1, 4 do n = n + 1 local k = {string.rep("k", 2^20 - 16) .. n} t[k] = true t[k] = nil end end`,
		"a table Go passes again": `function evaluate(m) m.junk = m.junk or {} for i = 1, 4 do m.junk[#m.junk + 1] = string.rep("x", 2^20 - 16) .. #m.junk end end`,
	} {
		t.Run(name, func(t *testing.T) {
			vm := New(Options{Limits: Limits{Timeout: 5 * time.Second, AllocBytes: budget}})
			defer vm.Close()
			if err := vm.Load(context.Background(), "hide.lua", src); err != nil {
				t.Fatal(err)
			}
			m := vm.NewTable(0, 0)
			base := memtest.LiveHeap()
			var err error
			calls := 0
			for ; err == nil && calls < 25; calls++ {
				_, err = vm.Call(context.Background(), "evaluate", m)
			}
			grown := memtest.LiveHeap() - base
			runtime.KeepAlive(m)
			t.Logf("%d calls, heap %+d MiB: %v", calls, grown>>20, err)
			if !errors.Is(err, ErrAllocation) {
				t.Fatalf("after %d calls keeping 4 MiB each under a budget of %d MiB: err = %v, want ErrAllocation", calls, budget>>20, err)
			}
			if grown > 2*budget {
				t.Errorf("the heap grew by %d MiB, over twice the budget", grown>>20)
			}
		})
	}
}

// The check of what a state holds is part of the call and ends by its
// deadline: a state of a million small tables takes several deadlines to
// walk, and a script can have it walked after every call by allocating
// garbage. Every call must end within twice the deadline, and one that
// cannot check its state in time fails with ErrTimeout and a rebuilt VM.
func TestHeapCheckEndsByTheDeadline(t *testing.T) {
	timeout := 50 * time.Millisecond * raceSlowdown
	vm := New(Options{Limits: Limits{Timeout: timeout, AllocBytes: 160 << 20}})
	defer vm.Close()
	if err := vm.Load(context.Background(), "walk.lua", `
kept, n = {}, 0
function grow()
  local b = kept[#kept]
  if not b or #b >= 100000 then b = {} table.insert(kept, b) end
  for i = 1, 2000 do table.insert(b, {}) end
  n = n + 2000
  return n
end`); err != nil {
		t.Fatal(err)
	}
	slowest, stops := time.Duration(0), 0
	for range 600 {
		start := time.Now()
		out, err := vm.Call(context.Background(), "grow")
		took := time.Since(start)
		slowest = max(slowest, took)
		if took > 2*timeout {
			t.Fatalf("a call that left %v tables took %v, over twice the deadline of %v (err: %v)", out, took, timeout, err)
		}
		switch {
		case errors.Is(err, ErrTimeout) && strings.Contains(err.Error(), "to check"):
			stops++
		case err != nil && !errors.Is(err, ErrTimeout): // a loaded box may stop grow itself
			t.Fatalf("after %v: %v", took, err)
		}
	}
	t.Logf("slowest call %v, %d state checks cut at the deadline of %v", slowest, stops, timeout)
	if stops == 0 {
		t.Error("no state check was cut at the deadline")
	}
}

// A piece of a string cut out by string.sub or a pattern's capture is a
// string of its own: were it a slice of its source, one byte of it kept
// would keep the whole megabyte, which the walk counts as one byte. Every
// call below keeps four bytes of four fresh megabytes, so the heap must
// stay as it was, however many calls run.
func TestKeptPiecesDoNotKeepTheirSource(t *testing.T) {
	const budget = 16 << 20
	for name, cut := range map[string]string{
		"string.sub":          `string.sub(s, 1, 1)`,
		"string.match":        `string.match(s, "^(.)")`,
		"string.match whole":  `string.match(s, "^.")`,
		"string.find capture": `select(3, string.find(s, "(.)"))`,
		"string.gmatch":       `string.gmatch(s, ".")()`,
		"gsub function":       `(function() local c string.gsub(s, "^.", function(x) c = x end) return c end)()`,
		"gsub table":          `(function() local c string.gsub(s, "^.", setmetatable({}, {__index = function(_, x) c = x end})) return c end)()`,
	} {
		t.Run(name, func(t *testing.T) {
			vm := New(Options{Limits: Limits{Timeout: 5 * time.Second, AllocBytes: budget}})
			defer vm.Close()
			src := `kept = {} function evaluate() for i = 1, 4 do local s = string.rep("x", 2^20 - 16) .. #kept kept[#kept + 1] = ` + cut + ` end end`
			if err := vm.Load(context.Background(), "cut.lua", src); err != nil {
				t.Fatal(err)
			}
			base := memtest.LiveHeap()
			for calls := range 25 {
				if _, err := vm.Call(context.Background(), "evaluate"); err != nil {
					t.Fatalf("call %d: %v", calls+1, err)
				}
			}
			if out, err := vm.GlobalValue("kept"); err != nil || len(out.([]any)) != 100 || out.([]any)[0] != "x" {
				t.Fatalf("kept = %.80v, %v; want 100 pieces of one byte", out, err)
			}
			grown := memtest.LiveHeap() - base
			t.Logf("heap %+d MiB after keeping 100 bytes of 100 MiB", grown>>20)
			if grown > budget {
				t.Errorf("the heap grew by %d MiB, over the budget of %d MiB, for 100 bytes kept", grown>>20, budget>>20)
			}
		})
	}
}
