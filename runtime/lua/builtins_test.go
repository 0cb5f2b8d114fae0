package lua

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	glua "github.com/yuin/gopher-lua"
)

// call loads src into a fresh VM and calls f().
func call(t *testing.T, opt Options, src string) ([]any, error) {
	t.Helper()
	vm := load(t, opt, "b.lua", src)
	return vm.Call(context.Background(), "f")
}

func TestBuiltinsKeepLuaSemantics(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []any
	}{
		// string.format as C Lua 5.1 prints it.
		{`string.format("%5.2f|%d|%x|%X|%o|%e", 3.14159, 3.7, 255, 255, 8, 12345.678)`, []any{" 3.14|3|ff|FF|10|1.234568e+04"}},
		{`string.format("%g %g %g %g", 0.1, 1e20, 100000, 1e6)`, []any{"0.1 1e+20 100000 1e+06"}},
		{`string.format("%q", 'a"b\n\r\0c')`, []any{"\"a\\\"b\\\n\\r\\000c\""}},
		{`string.format("%s|%-5s|%5.1s|%c|%%|%+d|%05d|%#x|% d|%i|%u", 1, "ab", "abc", 65, 5, 42, 255, 5, 7, 3)`, []any{"1|ab   |    a|A|%|+5|00042|0xff| 5|7|3"}},
		// gsub's replacements.
		{`string.gsub("hello world", "(o)", "[%1%0%%]")`, []any{"hell[oo%] w[oo%]rld", 2.0}},
		{`string.gsub("hello world", "%w+", {hello = "HI", world = false})`, []any{"HI world", 2.0}},
		{`string.gsub("abc", "%w", function(c) if c ~= "b" then return c:upper() end end)`, []any{"AbC", 3.0}},
		{`string.gsub("abc", "()", "%1")`, []any{"1a2b3c4", 4.0}},
		{`string.gsub("abc", "", "-")`, []any{"-a-b-c-", 4.0}},
		{`string.gsub("aaa", "a", "b", 2)`, []any{"bba", 2.0}},
		{`string.gsub("abc", "^a", "x")`, []any{"xbc", 1.0}},
		{`string.gsub("x = 1", "(%w+) = (%w+)", "%2 = %1")`, []any{"1 = x", 1.0}},
		// find and match positions, init and plain.
		{`string.find("a.b.c", ".", 3, true)`, []any{4.0, 4.0}},
		{`string.find("abcabc", "b", -3)`, []any{5.0, 5.0}},
		{`string.find("abc", "", 10)`, []any{4.0, 3.0}},
		{`string.find("abc", "c", 10)`, []any{nil}},
		{`string.find("key=val", "(%w+)=(%w+)")`, []any{1.0, 7.0, "key", "val"}},
		{`string.match("  trim  ", "^%s*(.-)%s*$")`, []any{"trim"}},
		{`string.match("f(a(b)c)", "%b()")`, []any{"(a(b)c)"}},
		{`string.match("THE (quick) fox", "%f[%a]%a+", 5)`, []any{"quick"}},
		// the table and base functions we replaced.
		{`table.concat({1, "b", 3.5}, ", ")`, []any{"1, b, 3.5"}},
		{`table.concat({"a", "b", "c", "d"}, "", 2, 3)`, []any{"bc"}},
		{`table.concat({}, "x")`, []any{""}},
		{`unpack({1, 2, 3})`, []any{1.0, 2.0, 3.0}},
		{`unpack({1, 2, 3}, 2)`, []any{2.0, 3.0}},
		{`unpack({1, nil, 3}, 1, 3)`, []any{1.0, nil, 3.0}},
		{`string.byte("abc")`, []any{97.0}},
		{`string.byte("abc", -2, -1)`, []any{98.0, 99.0}},
		{`string.rep("ab", 3, ",")`, []any{"ab,ab,ab"}},
		{`select("#", string.byte("abc", 4))`, []any{0.0}},
		{`("hello"):sub(2, 4), ("hello"):sub(-3), ("hello"):sub(0), ("hello"):sub(4, 2), ("hello"):sub(2, 100), ("hello"):sub(-100, 1)`, []any{"ell", "llo", "hello", "", "ello", "h"}},
		{`("hello"):sub(1e300), ("hello"):sub(-1e300, 1e300), ("hello"):sub(1/0), ("hello"):sub(0/0)`, []any{"", "hello", "", "hello"}},
		{`string.byte("abc", -1e300, 1e300)`, []any{97.0, 98.0, 99.0}},
	} {
		got, err := call(t, Options{}, "function f() return "+c.expr+" end")
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s = %#v, %v; want %#v", c.expr, got, err, c.want)
		}
	}
}

func TestGmatchAndSort(t *testing.T) {
	got, err := call(t, Options{}, `
function f()
  local keys = {}
  for k, v in string.gmatch("a=1, b=2, c=3", "(%w+)=(%w+)") do keys[#keys + 1] = k .. v end
  local words = {}
  for w in ("one two  three"):gmatch("%a+") do words[#words + 1] = w end
  local t = {5, 2, 8, 1}
  table.sort(t)
  local r = {"b", "c", "a"}
  table.sort(r, function(x, y) return x > y end)
  return table.concat(keys, " "), table.concat(words, ","), table.concat(t, ""), table.concat(r, "")
end`)
	if want := []any{"a1 b2 c3", "one,two,three", "1258", "cba"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
}

func TestBuiltinErrorsAreLuaErrors(t *testing.T) {
	for expr, want := range map[string]string{
		`string.format("%100d", 1)`:         "invalid format (width or precision too long)",
		`string.format("%y", 1)`:            "invalid option '%y' to 'format'",
		`string.format("%d")`:               "bad argument #2",
		`string.gsub("abc", "(a)", "%2")`:   "invalid capture index",
		`string.gsub("abc", "a", {a = {}})`: "invalid replacement value (a table)",
		`string.find("abc", "[a")`:          "malformed pattern (missing ']')",
		`string.match("abc", "(a")`:         "unfinished capture",
		`table.concat({1, {}, 3})`:          "invalid value (a table) at index 2",
		`"a" .. {}`:                         "attempt to concatenate a table value",
		`select(2, loadstring("x = = 1"))`:  "[string] ",
		`unpack({}, 1, 9000)`:               "too many results",
		`math.random(0)`:                    "b.lua:1: bad argument #1 to random (interval is empty)",
		`math.random(3, 1)`:                 "b.lua:1: bad argument #2 to random (interval is empty)",
		`math.random(-2^62, 2^62)`:          "ok",
		`(function() for i = 1, 100 do
		   local a, b, c = math.random(3), math.random(-2, 2), math.random()
		   assert(a >= 1 and a <= 3 and a % 1 == 0 and b >= -2 and b <= 2 and b % 1 == 0 and c >= 0 and c < 1)
		 end return "in range" end)()`: "in range",
	} {
		got, err := call(t, Options{}, "function f() return "+expr+" end")
		var msg string
		if err != nil {
			msg = err.Error()
		} else if len(got) > 0 {
			msg, _ = got[0].(string)
		}
		if want == "[string] " {
			want = "<string>:1:" // loadstring returns nil and the message
		}
		if want == "ok" && err == nil {
			continue
		}
		if !strings.Contains(msg, want) {
			t.Errorf("%s: %q, want it to contain %q", expr, msg, want)
		}
	}
}

func TestLoadReadsPiecesAndCompilesBounded(t *testing.T) {
	got, err := call(t, Options{Limits: Limits{SourceBytes: 300}}, `
function f()
  local parts, i = {"return ", "1 ", "+ 41"}, 0
  local g = load(function() i = i + 1 return parts[i] end)
  local h, err = loadstring(string.rep(" ", 301))
  return g(), h, err
end`)
	if err != nil || got[0] != 42.0 || got[1] != nil || !strings.Contains(got[2].(string), "exceeds the limit of 300") {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestSourceLimitsAtLoad(t *testing.T) {
	if err := Check("big.lua", strings.Repeat(" ", DefaultSourceBytes+1)); err == nil || !strings.Contains(err.Error(), "big.lua: source of") {
		t.Errorf("oversized source: %v", err)
	}
	deep := "x = 1\nreturn " + strings.Repeat("{", maxNesting+1) + strings.Repeat("}", maxNesting+1)
	if err := Check("deep.lua", deep); err == nil || !strings.Contains(err.Error(), "deep.lua:2: nesting deeper than 200") {
		t.Errorf("deep source: %v", err)
	}
	// Brackets in strings and comments do not count.
	quoted := "local s = '" + strings.Repeat("(", 500) + "' -- " + strings.Repeat("[", 500) + "\n--[[" + strings.Repeat("{", 500) + "]] return s"
	if err := Check("quoted.lua", quoted); err != nil {
		t.Errorf("brackets in strings: %v", err)
	}
	long := "return x" + strings.Repeat(".y", maxTreeDepth+1)
	if err := Check("long.lua", long); err == nil || !strings.Contains(err.Error(), "long.lua:1: expression nested deeper than 1000") {
		t.Errorf("long chain: %v", err)
	}
}

func TestConversionToGoIsBounded(t *testing.T) {
	vm := load(t, Options{Limits: Limits{ConvertNodes: 1000, ConvertBytes: 100_000}}, "conv.lua", `
function shared()
  local t = {1}
  for i = 1, 12 do t = {t, t} end
  return t
end
function wide() local t = {} for i = 1, 100 do t[i] = string.rep("x", 1000) end return t end
function small() local t = {1} for i = 1, 3 do t = {a = t, b = t} end return t end
function logs(t) sink(t) end
big = shared()`)
	vm.Register("sink", func([]any) ([]any, error) { return nil, nil })
	for fn, want := range map[string]string{
		"shared": "conv.lua:2: result of shared: value exceeds the conversion limit of 1000 values",
		"wide":   "conv.lua:7: result of wide: value exceeds the conversion limit of 100000 bytes",
	} {
		if _, err := vm.Call(context.Background(), fn); err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", fn, err, want)
		}
	}
	if out, err := vm.Call(context.Background(), "small"); err != nil || len(out[0].(map[string]any)) != 2 {
		t.Errorf("small shared tree: %v, %v", out, err)
	}
	big := vm.L.GetGlobal("big")
	if _, err := vm.Call(context.Background(), "logs", Table{big.(*glua.LTable)}); err == nil || !strings.HasPrefix(err.Error(), "conv.lua:9: sink: value exceeds") {
		t.Errorf("argument: %v", err)
	}
	if v, err := vm.GlobalValue("big"); v != nil || !errors.Is(err, ErrConversion) {
		t.Errorf("GlobalValue = %v, %v", v, err)
	}
}

// A sequence at the bound of the array part reads back whole: table.insert
// refuses to grow it further (gopher-lua's appended past the bound, where
// t[k] reads the hash part and found nil), and a key beyond goes to the
// hash part.
func TestSequencesStayReadableAtTheArrayBound(t *testing.T) {
	got, err := call(t, Options{Limits: Limits{Timeout: 10 * time.Second}}, `
function f()
  local t = {}
  for i = 1, 2^18 - 2 do t[i] = i end
  table.insert(t, 1, 0)
  local appended, err = pcall(table.insert, t, 0)
  local shifted = pcall(table.insert, t, 1, 0)
  table.insert(t, 2^18 + 5, "far")
  table.sort(t)
  return #t, t[#t], t[1], appended, err, shifted, t[2^18 + 5]
end`)
	want := []any{262143.0, 262142.0, 0.0, false, "b.lua:6: table.insert: a sequence holds at most 262143 elements", false, "far"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
}
