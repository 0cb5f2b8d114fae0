package lua

import (
	"time"

	glua "github.com/yuin/gopher-lua"
)

// removedBase are base functions a sandboxed script must not reach: file
// access, the module system (replaced by a require over Options.Modules),
// the collector, which a script could use to stall the node, and function
// environments, which would hide the bounded `..` (see concatFunc).
var removedBase = []string{"dofile", "loadfile", "module", "require", "collectgarbage", "_printregs", "print", "getfenv", "setfenv"}

// maxArrayIndex bounds the array part of every table. gopher-lua fills
// the gap below an integer key under its MaxArrayIndex with nils, one by
// one, in the instruction that sets it (t[2^26 - 1] = 1 allocates two
// gigabytes and takes seconds), and neither the deadline nor the budget
// can stop an instruction. A key at or above this goes to the hash part
// instead, as in C Lua, so one assignment fills at most 4 MiB of slots.
// gopher-lua's `#` counts only the array part, so `#` of a longer sequence
// stops here, and table.insert refuses to grow one past it (see
// tableInsert).
const maxArrayIndex = 1 << 18

func init() { glua.MaxArrayIndex = maxArrayIndex }

func (vm *VM) openSandbox(print func(string)) {
	L := vm.L
	for _, lib := range []struct {
		name string
		open glua.LGFunction
	}{{glua.BaseLibName, glua.OpenBase}, {glua.TabLibName, glua.OpenTable}, {glua.StringLibName, glua.OpenString}, {glua.MathLibName, glua.OpenMath}} {
		L.Push(L.NewFunction(lib.open))
		L.Push(glua.LString(lib.name))
		L.Call(1, 0)
	}
	for _, name := range removedBase {
		L.SetGlobal(name, glua.LNil)
	}
	L.SetGlobal("print", L.NewFunction(func(L *glua.LState) int {
		if print != nil {
			print(vm.joinArgs(L))
		}
		return 0
	}))
	L.SetGlobal("require", L.NewFunction(vm.require))
	vm.openBuiltins()
	os := L.NewTable()
	os.RawSetString("time", L.NewFunction(vm.osTime))
	os.RawSetString("clock", L.NewFunction(vm.osClock))
	os.RawSetString("date", L.NewFunction(vm.osDate))
	L.SetGlobal("os", os)
}

// joinArgs renders the arguments of the calling function as print does,
// within the string limit.
func (vm *VM) joinArgs(L *glua.LState) string {
	b := vm.newBuilder(L, "print")
	for i := 1; i <= L.GetTop(); i++ {
		if i > 1 {
			b.addByte('\t')
		}
		b.add(L.ToStringMeta(L.Get(i)).String())
	}
	return b.String()
}

// require loads one of Options.Modules once and caches its result.
func (vm *VM) require(L *glua.LState) int {
	name := L.CheckString(1)
	if v, ok := vm.loaded[name]; ok {
		L.Push(v)
		return 1
	}
	src, ok := vm.modules[name]
	if !ok {
		L.RaiseError("module %q is not available", name)
		return 0
	}
	proto, err := vm.compile(name+".lua", src)
	if err != nil {
		L.RaiseError("%v", err)
		return 0
	}
	L.Push(L.NewFunctionFromProto(proto))
	L.Call(0, 1)
	v := L.Get(-1)
	if v == glua.LNil {
		v = glua.LTrue
	}
	vm.loaded[name] = v
	L.Push(v)
	return 1
}

// osTime returns the VM clock in whole seconds, or converts a date table
// (read as UTC) the way Lua's os.time does.
func (vm *VM) osTime(L *glua.LState) int {
	if L.GetTop() == 0 || L.Get(1) == glua.LNil {
		L.Push(glua.LNumber(vm.now().Unix()))
		return 1
	}
	t := L.CheckTable(1)
	field := func(k string, def int) int {
		if v, ok := t.RawGetString(k).(glua.LNumber); ok {
			return int(v)
		}
		return def
	}
	d := time.Date(field("year", 1970), time.Month(field("month", 1)), field("day", 1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.UTC)
	L.Push(glua.LNumber(d.Unix()))
	return 1
}

// osClock is the seconds elapsed on the VM clock since the VM was made.
func (vm *VM) osClock(L *glua.LState) int {
	L.Push(glua.LNumber(vm.now().Sub(vm.born).Seconds()))
	return 1
}

// osDate supports the table forms "*t" and "!*t" only, both in UTC, which
// is what scheduled policies need; other formats would pull in locale and
// time-zone files.
func (vm *VM) osDate(L *glua.LState) int {
	format := L.OptString(1, "*t")
	var t time.Time
	if L.GetTop() >= 2 {
		t = time.Unix(int64(L.CheckNumber(2)), 0).UTC()
	} else {
		t = vm.now().UTC()
	}
	if format != "*t" && format != "!*t" {
		L.RaiseError("os.date: only \"*t\" and \"!*t\" are supported, got %q", format)
		return 0
	}
	tb := L.NewTable()
	for k, v := range map[string]int{"year": t.Year(), "month": int(t.Month()), "day": t.Day(),
		"hour": t.Hour(), "min": t.Minute(), "sec": t.Second(), "wday": int(t.Weekday()) + 1, "yday": t.YearDay()} {
		tb.RawSetString(k, glua.LNumber(v))
	}
	tb.RawSetString("isdst", glua.LFalse)
	L.Push(tb)
	return 1
}
