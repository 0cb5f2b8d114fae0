package lua

import (
	"context"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	glua "github.com/yuin/gopher-lua"
)

// Our matcher must agree with gopher-lua's on what both can answer; only
// the bounds differ.
func TestPatternsAgreeWithGopherLua(t *testing.T) {
	ref := glua.NewState(glua.Options{SkipOpenLibs: true})
	defer ref.Close()
	for _, open := range []glua.LGFunction{glua.OpenBase, glua.OpenString, glua.OpenTable} {
		ref.Push(ref.NewFunction(open))
		ref.Call(0, 0)
	}
	vm := New(Options{Limits: Limits{Timeout: 10 * time.Second}})
	defer vm.Close()
	const prog = `
function probe(s, p, r)
  local out = {pcall(string.find, s, p)}
  out[#out + 1] = "|"
  for _, v in ipairs({pcall(string.match, s, p)}) do out[#out + 1] = v end
  out[#out + 1] = "|"
  for _, v in ipairs({pcall(string.gsub, s, p, r)}) do out[#out + 1] = v end
  out[#out + 1] = "|"
  local ok, err = pcall(function()
    local n = 0
    for a, b in string.gmatch(s, p) do
      out[#out + 1] = a; out[#out + 1] = b or "-"
      n = n + 1
      if n > 50 then break end
    end
  end)
  out[#out + 1] = ok
  for i, v in ipairs(out) do out[i] = tostring(v) end
  return table.concat(out, ",")
end`
	if err := ref.DoString(prog); err != nil {
		t.Fatal(err)
	}
	if err := vm.Load(context.Background(), "probe.lua", prog); err != nil {
		t.Fatal(err)
	}
	subjects := []string{"", "a", "hello world", "  key = value  ", "(a(b)c)", "x=1, y=22, z=333", "aaa", "f(a,b)[c]{d}", "THE (quick) fox", "a.b-c+d*e?f", "\x00\x01z", "12ab34CD"}
	patterns := []string{"", "a", "^a", "a$", "^$", ".", "%a+", "%d+", "(%a+)=(%d+)", "%s*(.-)%s*$", "%b()", "%f[%w]%w+", "[aeiou]", "[^aeiou ]+",
		"[%a_][%w_]*", "(a*(.)%w(%s*))", "()", "(h)(e)(l)(l)(o)", "%w+$", "^(%w+)", "x*", ".-b", "[a-c]+", "[%]]", "(%a)%1", "%.", "%%", "a?b?c?",
		"[]]", "[^]]", "%u%l*", "%x+", "%p", "%c", "%z", "%S+", "(.)(.)", "((a)(b))", "[a-]", "[-a]", "%b{}", "f%((.-)%)"}
	compared, skipped := 0, 0
	check := func(s, p string) {
		r := "<%0>"
		if n := len(p); n > 0 && p[0] == '(' {
			r = "[%1]"
		}
		want := ref.CallByParam(glua.P{Fn: ref.GetGlobal("probe"), NRet: 1, Protect: true}, glua.LString(s), glua.LString(p), glua.LString(r))
		var wantOut string
		if want == nil {
			wantOut = ref.Get(-1).String()
			ref.Pop(1)
		}
		got, err := vm.Call(context.Background(), "probe", s, p, r)
		if err != nil || want != nil {
			t.Fatalf("probe(%q, %q): ours %v, gopher-lua %v", s, p, err, want)
		}
		if knownDifference(p, got[0].(string), wantOut) {
			skipped++
			return
		}
		compared++
		if !reflect.DeepEqual(got, []any{wantOut}) {
			t.Errorf("probe(%q, %q, %q):\n ours       %v\n gopher-lua %v", s, p, r, got[0], wantOut)
		}
	}
	for _, s := range subjects {
		for _, p := range patterns {
			check(s, p)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const atoms = "ab.%a%d%s[ab][^a]()*+-?^$%b()%1"
	for range 5000 {
		var p, s []byte
		for range rng.IntN(7) {
			p = append(p, atoms[rng.IntN(len(atoms))])
		}
		for range rng.IntN(10) {
			s = append(s, "ab1 ()"[rng.IntN(6)])
		}
		check(string(s), string(p))
	}
	t.Logf("%d cases compared, %d skipped as known differences", compared, skipped)
	if compared < 2000 {
		t.Errorf("only %d cases compared", compared)
	}
}

// knownDifference is true where gopher-lua departs from Lua 5.1 and we
// follow Lua: it has no %f frontier; it anchors gmatch at a leading '^',
// which Lua 5.1 reads as an ordinary character there; it accepts some
// malformed patterns (a trailing '%', '%b' without its two characters)
// that we refuse; and it compiles a pattern before matching, so it refuses
// a malformed one that Lua (and we) reject only if the match reaches the
// flaw, with other messages.
func knownDifference(p, ours, gopher string) bool {
	return strings.Contains(p, "%f") || strings.HasPrefix(p, "^") ||
		strings.Contains(ours, "malformed pattern") || strings.Contains(gopher, "false,")
}
