package lua

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sort"
	"strconv"
	"strings"

	glua "github.com/yuin/gopher-lua"
)

// The builtins below replace gopher-lua's where its version loops or
// allocates in proportion to its input without a bound: each counts its
// steps and stops when the call's context is done, as the VM does between
// instructions, and none builds a string over Limits.StringBytes.

// maxResults bounds the values one builtin pushes (unpack, string.byte),
// as Lua's C stack limit does.
const maxResults = 8000

// tickEvery is how many steps pass between two looks at the context.
const tickEvery = 1024

// steps counts the work of one builtin call.
type steps struct {
	L *glua.LState
	n int
}

func (s *steps) tick() {
	s.n++
	if s.n%tickEvery != 0 {
		return
	}
	if ctx := s.L.Context(); ctx != nil && ctx.Err() != nil {
		// The same message the VM raises, so classify names the limit.
		s.L.RaiseError("%v", ctx.Err())
	}
}

// builder builds one builtin's string result within Limits.StringBytes.
type builder struct {
	strings.Builder
	L     *glua.LState
	what  string
	limit int
}

func (vm *VM) newBuilder(L *glua.LState, what string) *builder {
	return &builder{L: L, what: what, limit: vm.limits.StringBytes}
}

func (b *builder) fits(n int) {
	if b.Len()+n > b.limit {
		b.L.RaiseError("%s: result exceeds the limit of %d bytes", b.what, b.limit)
	}
}

func (b *builder) add(s string) {
	b.fits(len(s))
	b.WriteString(s)
}

func (b *builder) addByte(c byte) {
	b.fits(1)
	b.WriteByte(c)
}

// checkSize refuses a result of size bytes before it is built.
func (vm *VM) checkSize(L *glua.LState, what string, size float64) {
	if !(size <= float64(vm.limits.StringBytes)) { // NaN too
		L.RaiseError("%s: result of %.0f bytes exceeds the limit of %d", what, size, vm.limits.StringBytes)
	}
}

func (vm *VM) openBuiltins() {
	L := vm.L
	set := func(t glua.LValue, name string, fn glua.LGFunction) {
		t.(*glua.LTable).RawSetString(name, L.NewFunction(fn))
	}
	g := L.G.Global
	set(g, "unpack", vm.unpack)
	set(g, "loadstring", vm.loadstring)
	set(g, "load", vm.load)
	set(g, concatFunc, vm.concat)
	str := L.GetGlobal("string")
	set(str, "rep", vm.stringRep)
	set(str, "byte", vm.stringByte)
	set(str, "sub", stringSub)
	set(str, "find", vm.stringFind)
	set(str, "match", vm.stringMatch)
	set(str, "gmatch", vm.stringGmatch)
	str.(*glua.LTable).RawSetString("gfind", str.(*glua.LTable).RawGetString("gmatch"))
	set(str, "gsub", vm.stringGsub)
	set(str, "format", vm.stringFormat)
	tab := L.GetGlobal("table")
	set(tab, "concat", vm.tableConcat)
	set(tab, "sort", vm.tableSort)
	set(tab, "insert", tableInsert(tab.(*glua.LTable).RawGetString("insert").(*glua.LFunction).GFunction))
	set(L.GetGlobal("math"), "random", mathRandom)
}

// mathRandom is Lua 5.1's math.random. gopher-lua's hands the interval to
// rand.Intn, which panics when it is empty or overflows an int.
func mathRandom(L *glua.LState) int {
	r := rand.Float64()
	switch L.GetTop() {
	case 0:
		L.Push(glua.LNumber(r))
	case 1:
		u := math.Floor(float64(L.CheckNumber(1)))
		if !(u >= 1) {
			L.ArgError(1, "interval is empty")
		}
		L.Push(glua.LNumber(math.Floor(r*u) + 1))
	default:
		l, u := math.Floor(float64(L.CheckNumber(1))), math.Floor(float64(L.CheckNumber(2)))
		if !(l <= u) {
			L.ArgError(2, "interval is empty")
		}
		L.Push(glua.LNumber(math.Floor(r*(u-l+1)) + l))
	}
	return 1
}

// unpack refuses more than maxResults values instead of pushing millions.
func (vm *VM) unpack(L *glua.LState) int {
	t := L.CheckTable(1)
	i := L.OptInt(2, 1)
	j := L.OptInt(3, t.Len())
	if i > j {
		return 0
	}
	if float64(j)-float64(i) >= maxResults {
		L.RaiseError("unpack: too many results (%.0f)", float64(j)-float64(i)+1)
	}
	for k := i; k <= j; k++ {
		L.Push(t.RawGetInt(k))
	}
	return j - i + 1
}

// stringRep checks the result size before building it: one huge rep would
// allocate in a single step the watchdog cannot interrupt.
func (vm *VM) stringRep(L *glua.LState) int {
	s := L.CheckString(1)
	n := math.Floor(float64(L.CheckNumber(2)))
	sep := L.OptString(3, "")
	if !(n >= 1) || (s == "" && sep == "") {
		L.Push(glua.LString(""))
		return 1
	}
	size := float64(len(s)) * n
	if sep != "" {
		size += float64(len(sep)) * (n - 1)
	}
	vm.checkSize(L, "string.rep", size)
	var out string
	if sep == "" {
		out = strings.Repeat(s, int(n))
	} else {
		out = s + strings.Repeat(sep+s, int(n)-1)
	}
	L.Push(glua.LString(out))
	return 1
}

// strIndex converts a Lua string position (1-based, negative from the end)
// to an offset clamped to [0, n], as Lua 5.1 does for find's init.
func strIndex(pos, n int) int {
	if pos < 0 {
		pos += n + 1
	}
	return min(max(pos-1, 0), n)
}

// strRange turns the Lua positions i and j in a string of n bytes
// (negative ones count from the end) into 1-based bounds within [1, n];
// i > j when they hold none. A position is clamped as a number, so that
// one past an int's range (1e300, which Go's conversion turns negative)
// is still past the end.
func strRange(i, j glua.LNumber, n int) (int, int) {
	pos := func(v glua.LNumber) int {
		if v != v { // NaN
			return 0
		}
		bound := float64(n + 1)
		p := int(max(min(float64(v), bound), -bound))
		if p < 0 {
			p += n + 1
		}
		return p
	}
	return max(pos(i), 1), min(pos(j), n)
}

func (vm *VM) stringByte(L *glua.LState) int {
	s := L.CheckString(1)
	first := L.OptNumber(2, 1)
	i, j := strRange(first, L.OptNumber(3, first), len(s))
	if i > j {
		return 0
	}
	if j-i >= maxResults {
		L.RaiseError("string.byte: too many results (%d)", j-i+1)
	}
	for k := i; k <= j; k++ {
		L.Push(glua.LNumber(s[k-1]))
	}
	return j - i + 1
}

func (vm *VM) newMatcher(L *glua.LState, src, pat string) *matcher {
	st := &steps{L: L}
	return &matcher{src: src, pat: pat, tick: st.tick, raise: L.RaiseError}
}

// piece is sub, a part of src, as a string of its own. Go's substrings
// share their source's bytes, so one byte of a megabyte kept would keep
// the megabyte, and the heap walk, which counts a string by its length,
// would see one byte.
func piece(src, sub string) glua.LString {
	if len(sub) == len(src) {
		return glua.LString(src)
	}
	return glua.LString(strings.Clone(sub))
}

// stringSub is Lua 5.1's string.sub, returning a piece of its own.
func stringSub(L *glua.LState) int {
	s := L.CheckString(1)
	i, j := strRange(L.CheckNumber(2), L.OptNumber(3, -1), len(s))
	if i > j {
		L.Push(glua.LString(""))
		return 1
	}
	L.Push(piece(s, s[i-1:j]))
	return 1
}

// pushCapture pushes c, a capture of a match in src.
func pushCapture(L *glua.LState, src string, c any) {
	switch v := c.(type) {
	case string:
		L.Push(piece(src, v))
	case int:
		L.Push(glua.LNumber(v))
	}
}

func (vm *VM) stringFind(L *glua.LState) int { return vm.find(L, true) }

func (vm *VM) stringMatch(L *glua.LState) int { return vm.find(L, false) }

// find is string.find (positions, then captures) and string.match (the
// captures, or the whole match).
func (vm *VM) find(L *glua.LState, positions bool) int {
	src := L.CheckString(1)
	pat := L.CheckString(2)
	init := strIndex(L.OptInt(3, 1), len(src))
	if positions && (glua.LVAsBool(L.Get(4)) || !hasSpecials(pat)) {
		k := strings.Index(src[init:], pat)
		if k < 0 {
			L.Push(glua.LNil)
			return 1
		}
		L.Push(glua.LNumber(init + k + 1))
		L.Push(glua.LNumber(init + k + len(pat)))
		return 2
	}
	m := vm.newMatcher(L, src, pat)
	anchored := strings.HasPrefix(pat, "^")
	s, e := m.find(init, anchored)
	if s < 0 {
		L.Push(glua.LNil)
		return 1
	}
	n := 0
	if positions {
		L.Push(glua.LNumber(s + 1))
		L.Push(glua.LNumber(e))
		n = 2
		if m.level == 0 {
			return n
		}
	}
	for _, c := range m.captures(s, e) {
		pushCapture(L, src, c)
		n++
	}
	return n
}

// stringGmatch returns an iterator over the matches; as in Lua 5.1 a
// leading '^' is an ordinary character here.
func (vm *VM) stringGmatch(L *glua.LState) int {
	src := L.CheckString(1)
	pat := L.CheckString(2)
	pos := 0
	// src and pat are upvalues too, for the heap walk to see what the
	// iterator holds.
	L.Push(L.NewClosure(func(L *glua.LState) int {
		m := vm.newMatcher(L, src, pat)
		for ; pos <= len(src); pos++ {
			m.level = 0
			if e := m.match(pos, 0); e != -1 {
				s := pos
				pos = e
				if e == s {
					pos++ // an empty match moves on by one
				}
				n := 0
				for _, c := range m.captures(s, e) {
					pushCapture(L, src, c)
					n++
				}
				return n
			}
		}
		return 0
	}, glua.LString(src), glua.LString(pat)))
	return 1
}

func (vm *VM) stringGsub(L *glua.LState) int {
	src := L.CheckString(1)
	pat := L.CheckString(2)
	repl := L.CheckAny(3)
	switch repl.(type) {
	case glua.LString, glua.LNumber, *glua.LTable, *glua.LFunction:
	default:
		L.ArgError(3, "string/function/table expected, got "+repl.Type().String())
	}
	maxN := L.OptInt(4, len(src)+1)
	m := vm.newMatcher(L, src, pat)
	b := vm.newBuilder(L, "string.gsub")
	anchored := strings.HasPrefix(pat, "^")
	p := 0
	if anchored {
		p = 1
	}
	s, n := 0, 0
scan:
	for n < maxN {
		m.level = 0
		e := m.match(s, p)
		if e != -1 {
			n++
			vm.addReplacement(L, b, m, repl, s, e)
		}
		switch {
		case e != -1 && e > s:
			s = e
		case s < len(src):
			b.addByte(src[s])
			s++
		default:
			break scan // the subject is used up
		}
		if anchored {
			break
		}
	}
	if s < len(src) {
		b.add(src[s:])
	}
	L.Push(glua.LString(b.String()))
	L.Push(glua.LNumber(n))
	return 2
}

// addReplacement appends the replacement of the match src[s:e].
func (vm *VM) addReplacement(L *glua.LState, b *builder, m *matcher, repl glua.LValue, s, e int) {
	var v glua.LValue
	switch r := repl.(type) {
	case glua.LString, glua.LNumber:
		tpl := r.String()
		for i := 0; i < len(tpl); i++ {
			c := tpl[i]
			if c != '%' || i+1 == len(tpl) {
				b.addByte(c)
				continue
			}
			i++
			switch d := tpl[i]; {
			case d == '0':
				b.add(m.src[s:e])
			case d >= '1' && d <= '9':
				switch c := m.capture(int(d-'1'), s, e).(type) {
				case string:
					b.add(c)
				case int:
					b.add(strconv.Itoa(c))
				}
			default:
				b.addByte(d)
			}
		}
		return
	case *glua.LTable:
		pushCapture(L, m.src, m.capture(0, s, e))
		v = L.GetTable(r, L.Get(-1))
		L.Pop(1)
	case *glua.LFunction:
		L.Push(r)
		caps := m.captures(s, e)
		for _, c := range caps {
			pushCapture(L, m.src, c)
		}
		L.Call(len(caps), 1)
		v = L.Get(-1)
		L.Pop(1)
	}
	switch v.(type) {
	case glua.LString, glua.LNumber:
		b.add(v.String())
	default:
		if glua.LVAsBool(v) {
			L.RaiseError("invalid replacement value (a %s)", v.Type())
		}
		b.add(m.src[s:e]) // nil or false keeps the match
	}
}

// tableConcat joins t[i..j] within the string limit.
func (vm *VM) tableConcat(L *glua.LState) int {
	t := L.CheckTable(1)
	sep := L.OptString(2, "")
	i := L.OptInt(3, 1)
	j := L.OptInt(4, t.Len())
	b := vm.newBuilder(L, "table.concat")
	st := &steps{L: L}
	for k := i; k <= j; k++ {
		st.tick()
		switch v := t.RawGetInt(k).(type) {
		case glua.LString, glua.LNumber:
			b.add(v.String())
		default:
			L.RaiseError("table.concat: invalid value (a %s) at index %d", v.Type(), k)
		}
		if k < j {
			b.add(sep)
		}
	}
	L.Push(glua.LString(b.String()))
	return 1
}

// tableInsert wraps gopher-lua's table.insert, which appends to a table's
// array part (or shifts it up by one) past maxArrayIndex, where t[k] no
// longer reads it: such a sequence would read back nil. It refuses to grow
// the array part that far instead.
func tableInsert(insert glua.LGFunction) glua.LGFunction {
	return func(L *glua.LState) int {
		t := L.CheckTable(1)
		n := len(values(reflect.ValueOf(t), tableFields.array))
		grows := L.GetTop() == 2 || (L.GetTop() == 3 && L.CheckInt(2) >= 1 && L.CheckInt(2) <= n)
		if grows && n+1 >= maxArrayIndex {
			L.RaiseError("table.insert: a sequence holds at most %d elements", maxArrayIndex-1)
		}
		return insert(L)
	}
}

// tableSort sorts t[1..#t] counting comparisons, which gopher-lua's sort
// of a large table without a Lua comparator never checks the context for.
func (vm *VM) tableSort(L *glua.LState) int {
	t := L.CheckTable(1)
	var less *glua.LFunction
	if L.Get(2) != glua.LNil {
		less = L.CheckFunction(2)
	}
	s := &sorter{L: L, less: less, st: steps{L: L}, v: make([]glua.LValue, t.Len())}
	for i := range s.v {
		s.v[i] = t.RawGetInt(i + 1)
	}
	sort.Sort(s)
	for i, v := range s.v {
		t.RawSetInt(i+1, v)
	}
	return 0
}

type sorter struct {
	L    *glua.LState
	less *glua.LFunction
	st   steps
	v    []glua.LValue
}

func (s *sorter) Len() int      { return len(s.v) }
func (s *sorter) Swap(i, j int) { s.v[i], s.v[j] = s.v[j], s.v[i] }
func (s *sorter) Less(i, j int) bool {
	s.st.tick()
	if s.less == nil {
		return s.L.LessThan(s.v[i], s.v[j])
	}
	s.L.Push(s.less)
	s.L.Push(s.v[i])
	s.L.Push(s.v[j])
	s.L.Call(2, 1)
	r := glua.LVAsBool(s.L.Get(-1))
	s.L.Pop(1)
	return r
}

// concat is the `..` operator: the compiler turns each chain a .. b .. c
// into one call of it (see rewriteConcat), so that no string a script
// builds exceeds the string limit. It keeps Lua's order: strings and
// numbers join from the right, and __concat applies to any other pair.
func (vm *VM) concat(L *glua.LState) int {
	n := L.GetTop()
	rhs := L.Get(n)
	for i := n - 1; i >= 1; i-- {
		lhs := L.Get(i)
		if stringish(lhs) && stringish(rhs) {
			j := i
			for j > 1 && stringish(L.Get(j-1)) {
				j--
			}
			// Each operand rendered once: a number's String formats it.
			var buf [8]string
			parts := buf[:0]
			size := 0
			for k := j; k <= i+1; k++ {
				v := rhs
				if k <= i {
					v = L.Get(k)
				}
				parts = append(parts, v.String())
				size += len(parts[len(parts)-1])
			}
			vm.checkSize(L, "concatenation", float64(size))
			rhs, i = glua.LString(strings.Join(parts, "")), j
			continue
		}
		mm := L.GetMetaField(lhs, "__concat")
		if mm == glua.LNil {
			mm = L.GetMetaField(rhs, "__concat")
		}
		if _, ok := mm.(*glua.LFunction); !ok {
			bad := lhs
			if stringish(lhs) {
				bad = rhs
			}
			L.RaiseError("attempt to concatenate a %s value", bad.Type())
		}
		L.Push(mm)
		L.Push(lhs)
		L.Push(rhs)
		L.Call(2, 1)
		rhs = L.Get(-1)
		L.Pop(1)
	}
	L.Push(rhs)
	return 1
}

func stringish(v glua.LValue) bool {
	switch v.(type) {
	case glua.LString, glua.LNumber:
		return true
	}
	return false
}

// loadstring compiles a chunk with the same bounds as the script itself.
func (vm *VM) loadstring(L *glua.LState) int {
	return vm.loadChunk(L, L.CheckString(1), L.OptString(2, "<string>"))
}

// load reads the chunk from a function, up to the source size limit.
func (vm *VM) load(L *glua.LState) int {
	fn := L.CheckFunction(1)
	name := L.OptString(2, "=(load)")
	var src strings.Builder
	for {
		L.Push(fn)
		L.Call(0, 1)
		piece := L.Get(-1)
		L.Pop(1)
		s, ok := piece.(glua.LString)
		if piece == glua.LNil || (ok && s == "") {
			break
		}
		if !ok {
			L.Push(glua.LNil)
			L.Push(glua.LString("reader function must return a string"))
			return 2
		}
		if src.Len()+len(s) > vm.limits.SourceBytes {
			L.Push(glua.LNil)
			L.Push(glua.LString(fmt.Sprintf("%s: source exceeds the limit of %d bytes", name, vm.limits.SourceBytes)))
			return 2
		}
		src.WriteString(string(s))
	}
	return vm.loadChunk(L, src.String(), name)
}

func (vm *VM) loadChunk(L *glua.LState, src, name string) int {
	proto, err := vm.compile(name, src)
	if err != nil {
		L.Push(glua.LNil)
		L.Push(glua.LString(err.Error()))
		return 2
	}
	L.Push(L.NewFunctionFromProto(proto))
	return 1
}

// stringFormat is Lua 5.1's string.format: a width or precision has at
// most two digits, as in C Lua, so one directive yields at most 99 bytes
// beyond its argument, and the result stays within the string limit.
func (vm *VM) stringFormat(L *glua.LState) int {
	f := L.CheckString(1)
	b := vm.newBuilder(L, "string.format")
	arg := 1
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			b.addByte(f[i])
			continue
		}
		if i++; i < len(f) && f[i] == '%' {
			b.addByte('%')
			continue
		}
		start := i
		for i < len(f) && strings.IndexByte("-+ #0", f[i]) >= 0 {
			i++
		}
		if i-start > 5 {
			L.RaiseError("invalid format (repeated flags)")
		}
		digits := func() {
			for k := 0; i < len(f) && f[i] >= '0' && f[i] <= '9'; k++ {
				if k == 2 {
					L.RaiseError("invalid format (width or precision too long)")
				}
				i++
			}
		}
		digits()
		precision := false
		if i < len(f) && f[i] == '.' {
			precision = true
			i++
			digits()
		}
		if i >= len(f) {
			L.RaiseError("invalid option '%%' to 'format'")
		}
		spec := "%" + f[start:i]
		arg++
		switch c := f[i]; c {
		case 'c':
			b.addByte(byte(L.CheckInt(arg)))
		case 'd', 'i':
			b.add(fmt.Sprintf(spec+"d", int64(L.CheckNumber(arg))))
		case 'o', 'u', 'x', 'X':
			verb := string(c)
			if c == 'u' {
				verb = "d"
			}
			b.add(fmt.Sprintf(spec+verb, uint64(int64(L.CheckNumber(arg)))))
		case 'e', 'E', 'f', 'g', 'G':
			if !precision {
				spec += ".6" // C's default; Go's is "as many as needed"
			}
			b.add(fmt.Sprintf(spec+string(c), float64(L.CheckNumber(arg))))
		case 'q':
			b.addByte('"')
			for _, ch := range []byte(L.CheckString(arg)) {
				switch ch {
				case '"', '\\', '\n':
					b.addByte('\\')
					b.addByte(ch)
				case '\r':
					b.add(`\r`)
				case 0:
					b.add(`\000`)
				default:
					b.addByte(ch)
				}
			}
			b.addByte('"')
		case 's':
			s := L.CheckString(arg)
			if spec == "%" {
				b.add(s)
			} else {
				b.fits(len(s) + 99)
				b.add(fmt.Sprintf(spec+"s", s))
			}
		default:
			L.RaiseError("invalid option '%%%c' to 'format'", c)
		}
	}
	L.Push(glua.LString(b.String()))
	return 1
}
