package lua

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, opt Options, name, src string) *VM {
	t.Helper()
	vm := New(opt)
	t.Cleanup(vm.Close)
	if err := vm.Load(context.Background(), name, src); err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return vm
}

func TestCallConvertsValuesBothWays(t *testing.T) {
	vm := load(t, Options{}, "conv.lua", `
function echo(m)
  return m.name, m.n + 1, #m.list, m.nested.ok, {a = 1, b = {2, 3}}, {10, 20}
end`)
	out, err := vm.Call(context.Background(), "echo", map[string]any{
		"name": "api", "n": 41, "list": []any{1.0, "x", true}, "nested": map[string]any{"ok": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []any{"api", 42.0, 3.0, true, map[string]any{"a": 1.0, "b": []any{2.0, 3.0}}, []any{10.0, 20.0}}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("got %#v\nwant %#v", out, want)
	}
}

func TestFromLuaMixedAndCyclicTables(t *testing.T) {
	vm := load(t, Options{}, "mixed.lua", `
mixed = {1, 2, x = "y"}
sparse = {[1] = "a", [3] = "c"}
cyc = {}
cyc.self = cyc
fn = {f = function() end}`)
	if got := vm.Global("mixed"); !reflect.DeepEqual(got, map[string]any{"1": 1.0, "2": 2.0, "x": "y"}) {
		t.Errorf("mixed = %#v", got)
	}
	if got := vm.Global("sparse"); !reflect.DeepEqual(got, map[string]any{"1": "a", "3": "c"}) {
		t.Errorf("sparse = %#v", got)
	}
	// A cycle is cut off at the depth limit rather than recursing forever.
	depth := 0
	for v := vm.Global("cyc"); v != nil; v = v.(map[string]any)["self"] {
		depth++
	}
	if depth != maxDepth {
		t.Errorf("cyclic table converted to depth %d, want %d", depth, maxDepth)
	}
	if got := vm.Global("fn"); !reflect.DeepEqual(got, map[string]any{"f": nil}) {
		t.Errorf("function value = %#v", got)
	}
}

func TestSyntaxErrorNamesFileAndLine(t *testing.T) {
	for _, src := range []string{"x = 1\nfunction f(\n  return\nend", "local = 3"} {
		err := Check("bad.lua", src)
		var le *Error
		if !errors.As(err, &le) {
			t.Fatalf("Check(%q) = %v, want *Error", src, err)
		}
		if !strings.HasPrefix(le.Msg, "bad.lua:") {
			t.Errorf("message %q does not start with file:line", le.Msg)
		}
	}
	if err := Check("bad.lua", "x = 1\ny = x +\n"); err == nil || !strings.Contains(err.Error(), "bad.lua") {
		t.Errorf("truncated script: %v", err)
	}
	if err := Check("good.lua", "function evaluate(m) return 1 end"); err != nil {
		t.Errorf("good script refused: %v", err)
	}
	vm := New(Options{})
	defer vm.Close()
	if err := vm.Load(context.Background(), "bad.lua", "if then"); err == nil {
		t.Error("Load accepted a syntax error")
	}
}

func TestEndlessLoopStoppedWithLineAndVMReusable(t *testing.T) {
	vm := load(t, Options{Limits: Limits{Timeout: 50 * time.Millisecond}}, "loop.lua", `
function spin()
  while true do end
end
function sneaky()
  while true do pcall(function() while true do end end) end
end
function ok() return "still here" end`)
	for _, fn := range []string{"spin", "sneaky"} {
		_, err := vm.Call(context.Background(), fn)
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("%s: err = %v, want ErrTimeout", fn, err)
		}
		if !strings.HasPrefix(err.Error(), "loop.lua:") {
			t.Errorf("%s: message %q lacks the line", fn, err)
		}
	}
	if out, err := vm.Call(context.Background(), "ok"); err != nil || out[0] != "still here" {
		t.Fatalf("VM unusable after timeout: %v %v", out, err)
	}
}

func TestTopLevelLoopStoppedAtLoad(t *testing.T) {
	vm := New(Options{Limits: Limits{Timeout: 50 * time.Millisecond}})
	defer vm.Close()
	err := vm.Load(context.Background(), "top.lua", "local i = 0\nwhile true do i = i + 1 end")
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "top.lua:2") {
		t.Fatalf("err = %v, want timeout at top.lua:2", err)
	}
}

func TestCallerCancellationStopsScript(t *testing.T) {
	vm := load(t, Options{}, "c.lua", "function spin() while true do end end")
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	_, err := vm.Call(ctx, "spin")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestRunawayAllocationStopped(t *testing.T) {
	// A generous deadline so that the allocation budget is what trips.
	vm := load(t, Options{Limits: Limits{Timeout: time.Minute, AllocBytes: 8 << 20}}, "alloc.lua", `
function hoard()
  local t = {}
  local s = string.rep("x", 1000)
  while true do
    t[#t + 1] = s .. #t
  end
end`)
	_, err := vm.Call(context.Background(), "hoard")
	if !errors.Is(err, ErrAllocation) {
		t.Fatalf("hoard: err = %v, want ErrAllocation", err)
	}
	if !strings.HasPrefix(err.Error(), "alloc.lua:") {
		t.Errorf("hoard: message %q lacks the line", err)
	}
}

// A string doubled in a loop meets the string limit before the budget: the
// `..` operator refuses a result over StringBytes before building it.
func TestConcatenationIsBounded(t *testing.T) {
	vm := load(t, Options{Limits: Limits{StringBytes: 1000}}, "cat.lua", `
function double()
  local s = "x"
  while true do s = s .. s end
end
function chain(a, b) return a .. 1 .. b .. 2.5, (a .. b):len() end
local mt = {__concat = function(l, r) return "<" .. tostring(type(l)) .. "," .. tostring(type(r)) .. ">" end}
function meta() local t = setmetatable({}, mt) return "a" .. t .. "b", t .. "x" .. "y" end`)
	if _, err := vm.Call(context.Background(), "double"); err == nil || !strings.Contains(err.Error(), "cat.lua:4: concatenation: result of 1024 bytes exceeds the limit of 1000") {
		t.Fatalf("double: %v", err)
	}
	out, err := vm.Call(context.Background(), "chain", "a", "b")
	if want := []any{"a1b2.5", 2.0}; err != nil || !reflect.DeepEqual(out, want) {
		t.Fatalf("chain = %v, %v; want %v", out, err, want)
	}
	// Right to left, as Lua: t joins "b" first, then "a" joins the result.
	out, err = vm.Call(context.Background(), "meta")
	if want := []any{"a<table,string>", "<table,string>"}; err != nil || !reflect.DeepEqual(out, want) {
		t.Fatalf("meta = %v, %v; want %v", out, err, want)
	}
}

// After a call stopped by the allocation budget, the next calls run with a
// budget of their own and are not stopped by the one before.
func TestAllocationStopDoesNotLeakIntoLaterCalls(t *testing.T) {
	vm := load(t, Options{Limits: Limits{Timeout: time.Minute, AllocBytes: 8 << 20}}, "again.lua", `
function hoard()
  local t = {}
  while true do t[#t + 1] = {} end
end
function small() local t = {} for i = 1, 100 do t[i] = i end return #t end`)
	for range 3 {
		if _, err := vm.Call(context.Background(), "hoard"); !errors.Is(err, ErrAllocation) {
			t.Fatalf("hoard: err = %v, want ErrAllocation", err)
		}
		for range 20 {
			if out, err := vm.Call(context.Background(), "small"); err != nil || out[0] != 100.0 {
				t.Fatalf("small after a stopped call = %v, %v", out, err)
			}
		}
	}
}

func TestTablesBuiltFromGo(t *testing.T) {
	vm := load(t, Options{}, "tab.lua", `
function read(m) return m.name, m.n, m.ok, #m.list, m.list[2].x, m.gone end`)
	m := vm.NewTable(0, 5)
	m.SetString("name", "api")
	m.SetNumber("n", 2.5)
	m.SetBool("ok", true)
	m.SetNumber("gone", 1)
	m.SetTable("gone", Table{}) // a zero Table removes the field
	list := vm.NewTable(2, 0)
	for i := range 2 {
		e := vm.NewTable(0, 1)
		e.SetNumber("x", float64(i*10))
		list.Append(e)
	}
	m.SetTable("list", list)
	out, err := vm.Call(context.Background(), "read", m)
	if want := []any{"api", 2.5, true, 2.0, 10.0, nil}; err != nil || !reflect.DeepEqual(out, want) {
		t.Fatalf("read = %v, %v; want %v", out, err, want)
	}
}

func TestStringRepIsBounded(t *testing.T) {
	vm := load(t, Options{Limits: Limits{StringBytes: 1000}}, "rep.lua", `
function big() return string.rep("ab", 1e9) end
function small() return string.rep("ab", 3, "-") end`)
	if _, err := vm.Call(context.Background(), "big"); err == nil || !strings.Contains(err.Error(), "exceeds the limit") {
		t.Fatalf("huge rep: %v", err)
	}
	out, err := vm.Call(context.Background(), "small")
	if err != nil || out[0] != "ab-ab-ab" {
		t.Fatalf("small rep = %v, %v", out, err)
	}
}

func TestDeepRecursionIsAnErrorNotACrash(t *testing.T) {
	vm := load(t, Options{}, "rec.lua", "function r(n) return 1 + r(n + 1) end")
	if _, err := vm.Call(context.Background(), "r", 1); err == nil {
		t.Fatal("unbounded recursion returned no error")
	}
}

func TestSandboxExposesOnlySafeLibraries(t *testing.T) {
	vm := load(t, Options{}, "sb.lua", `
function probe()
  return io == nil, debug == nil, package == nil, dofile == nil, loadfile == nil,
    os.execute == nil, os.exit == nil, os.getenv == nil, collectgarbage == nil,
    type(string.format) == "function", type(table.insert) == "function", type(math.floor) == "function",
    pcall(require, "os")
end`)
	out, err := vm.Call(context.Background(), "probe")
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range out[:12] {
		if v != true {
			t.Errorf("probe %d = %v, want true", i, v)
		}
	}
	if out[12] != false || !strings.Contains(fmt.Sprint(out[13]), "not available") {
		t.Errorf("require of an unlisted module: %v %v", out[12], out[13])
	}
}

func TestRequireLoadsListedModulesOnce(t *testing.T) {
	vm := load(t, Options{Modules: map[string]string{
		"counter": "loads = (loads or 0) + 1\nreturn {twice = function(x) return 2 * x end}",
		"broken":  "return {",
	}}, "req.lua", `
local c = require("counter")
local again = require("counter")
function f() return c.twice(21), loads, c == again end
function g() return require("broken") end`)
	out, err := vm.Call(context.Background(), "f")
	if err != nil || !reflect.DeepEqual(out, []any{42.0, 1.0, true}) {
		t.Fatalf("f = %v, %v", out, err)
	}
	if _, err := vm.Call(context.Background(), "g"); err == nil || !strings.Contains(err.Error(), "broken.lua:") {
		t.Fatalf("broken module: %v", err)
	}
}

func TestClockDrivesOsFunctions(t *testing.T) {
	now := time.Date(2025, 3, 14, 9, 30, 0, 0, time.UTC)
	vm := load(t, Options{Now: func() time.Time { return now }}, "clock.lua", `
function f()
  local d = os.date("!*t")
  return os.time(), d.hour, d.wday, os.time({year = 2025, month = 3, day = 14, hour = 9, min = 30}), os.clock()
end
function bad() return os.date("%Y") end`)
	now = now.Add(90 * time.Second)
	out, err := vm.Call(context.Background(), "f")
	want := []any{float64(now.Unix()), 9.0, 6.0, float64(now.Add(-90 * time.Second).Unix()), 90.0}
	if err != nil || !reflect.DeepEqual(out, want) {
		t.Fatalf("f = %v, %v; want %v", out, err, want)
	}
	if _, err := vm.Call(context.Background(), "bad"); err == nil {
		t.Fatal("unsupported os.date format accepted")
	}
}

func TestRegisteredFunctionsAndErrors(t *testing.T) {
	var printed string
	vm := New(Options{Print: func(s string) { printed = s }})
	defer vm.Close()
	vm.Register("add", func(args []any) ([]any, error) {
		a, ok1 := args[0].(float64)
		b, ok2 := args[1].(float64)
		if !ok1 || !ok2 {
			return nil, errors.New("numbers expected")
		}
		return []any{a + b}, nil
	})
	if err := vm.Load(context.Background(), "reg.lua", `
function f() print("sum", add(2, 3)) return add(2, 3) end
function g()
  local x = 1
  return add("a", x)
end`); err != nil {
		t.Fatal(err)
	}
	if out, err := vm.Call(context.Background(), "f"); err != nil || out[0] != 5.0 {
		t.Fatalf("f = %v, %v", out, err)
	}
	if printed != "sum\t5" {
		t.Errorf("printed %q", printed)
	}
	_, err := vm.Call(context.Background(), "g")
	if err == nil || !strings.Contains(err.Error(), "reg.lua:5") || !strings.Contains(err.Error(), "numbers expected") {
		t.Fatalf("g: %v", err)
	}
	if _, err := vm.Call(context.Background(), "missing"); err == nil {
		t.Fatal("calling a missing function succeeded")
	}
	if vm.HasFunc("missing") || !vm.HasFunc("f") {
		t.Error("HasFunc wrong")
	}
}

func FuzzLoadNeverPanics(f *testing.F) {
	for _, s := range []string{"", "return 1", "while true do end", "x = {", "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) return t.x", string([]byte{0x1b, 'L', 'u', 'a'})} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		vm := New(Options{Limits: Limits{Timeout: 20 * time.Millisecond, AllocBytes: 16 << 20}})
		defer vm.Close()
		_ = vm.Load(context.Background(), "fuzz.lua", src)
	})
}

// The host reads and sets globals raw: a metamethod on the globals table
// would otherwise run outside any call, with no deadline to stop it.
func TestHostGlobalAccessIgnoresMetatables(t *testing.T) {
	vm := load(t, Options{Limits: Limits{Timeout: time.Second}}, "meta.lua", `
function f() return x end
setmetatable(_G, {__index = function() while true do end end, __newindex = function() while true do end end})`)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if vm.HasFunc("missing") {
			t.Error("HasFunc(missing)")
		}
		if v, err := vm.GlobalValue("missing"); v != nil || err != nil {
			t.Errorf("GlobalValue(missing) = %v, %v", v, err)
		}
		vm.SetGlobal("x", 7.0)
		if _, err := vm.Call(context.Background(), "missing"); err == nil {
			t.Error("Call(missing) succeeded")
		}
		if out, err := vm.Call(context.Background(), "f"); err != nil || out[0] != 7.0 {
			t.Errorf("f() = %v, %v; want 7 set raw", out, err)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a global look-up from Go ran the script's __index or __newindex and never returned")
	}
}
