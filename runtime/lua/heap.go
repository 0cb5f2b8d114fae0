package lua

import (
	"reflect"
	"slices"
	"time"
	"unsafe"
	"weak"

	glua "github.com/yuin/gopher-lua"
)

// The allocation budget bounds what a call allocates, and the VM's live
// heap: what its state still holds between calls. The live heap is
// estimated by walking everything the state can reach. The walk is skipped
// while the last estimate plus everything the process has allocated since
// stays within the budget, since the state cannot have grown by more, so a
// script that allocates little is never walked.

// heapMark is the state of the last walk.
type heapMark struct {
	allocs uint64 // the process's allocation counter then
	live   uint64 // what the state held then
}

// heapOver reports what the state holds and whether that is over the
// budget, walking it only when it may be. The walk may take as long as a
// call: a state of a million small tables takes hundreds of milliseconds
// to walk, and a script can have it walked after every call by making
// garbage. late reports a walk cut off there, which leaves what the state
// holds unknown.
func (vm *VM) heapOver() (live uint64, over, late bool) {
	now := allocated()
	if vm.heap.live+(now-vm.heap.allocs) <= vm.limits.AllocBytes {
		return vm.heap.live, false, false
	}
	var deadline time.Time
	if vm.limits.Timeout > 0 {
		deadline = time.Now().Add(vm.limits.Timeout)
	}
	live, late = vm.liveBytes(vm.limits.AllocBytes, deadline)
	vm.heap = heapMark{allocs: now, live: live}
	return live, live > vm.limits.AllocBytes, late
}

// Approximate sizes of gopher-lua's objects, from its types; an estimate
// need only be within a small factor of the truth.
const (
	valueBytes = 16 // an LValue interface
	boxBytes   = 16 // what boxing a number or string header allocates
	tableBytes = 128
	entryBytes = 48 // one map entry, key, value and overhead
	// gopher-lua's key index of a table: a boxed key in keys and an entry
	// in k2i for every key the table has ever had (measured).
	keyIndexBytes = 120
	functionBytes = 96
	protoBytes    = 256
	dbgLocalBytes = 48 // a local's name and range
	dedupStrings  = 64 // strings at least this long are counted once
)

// Indices of the LTable fields that hold its storage, read with reflect:
// gopher-lua keeps every key a table has ever had in keys and k2i, which
// iteration does not show.
var tableFields = func() (f struct{ array, dict, strdict, keys, k2i int }) {
	t := reflect.TypeFor[glua.LTable]()
	slice := reflect.TypeFor[[]glua.LValue]()
	f.array, f.keys = field(t, "array", slice), field(t, "keys", slice)
	f.dict, f.strdict, f.k2i = field(t, "dict", nil), field(t, "strdict", nil), field(t, "k2i", nil)
	return f
}()

// builtinMtsField is the index of the metatables of whole types in
// gopher-lua's Global: setmetatable(0, mt) sets the one of every number.
var builtinMtsField = field(reflect.TypeFor[glua.Global](), "builtinMts", reflect.TypeFor[map[int]glua.LValue]())

// field is the index of the field name of t, which must be of type want
// when one is given: the walk reads it through a pointer of that type.
func field(t reflect.Type, name string, want reflect.Type) int {
	sf, ok := t.FieldByName(name)
	if !ok || (want != nil && sf.Type != want) {
		panic("lua: gopher-lua's " + t.Name() + " has no field " + name + " of the expected type")
	}
	return sf.Index[0]
}

// values reads the unexported []LValue field i of the struct v points to.
func values(v reflect.Value, i int) []glua.LValue {
	return *(*[]glua.LValue)(unsafe.Pointer(v.Elem().Field(i).UnsafeAddr()))
}

func tableStorage(t *glua.LTable) uint64 {
	v := reflect.ValueOf(t).Elem()
	n := uint64(tableBytes)
	n += uint64(v.Field(tableFields.array).Cap()) * valueBytes
	n += uint64(v.Field(tableFields.dict).Len()+v.Field(tableFields.strdict).Len()) * entryBytes
	n += uint64(max(v.Field(tableFields.keys).Cap(), v.Field(tableFields.k2i).Len())) * keyIndexBytes
	return n
}

// tableSlots is how many values walking t reads: its array part, nil
// slots included, and the live entries of its hash part.
func tableSlots(t *glua.LTable) int {
	v := reflect.ValueOf(t).Elem()
	return v.Field(tableFields.array).Len() + v.Field(tableFields.dict).Len() + v.Field(tableFields.strdict).Len()
}

// liveBytes estimates what the state can reach, stopping once over limit,
// or at deadline unless it is zero, which late reports. It keeps its own
// stack, of containers only: a script can nest tables a million deep, or
// put a million numbers in one.
func (vm *VM) liveBytes(limit uint64, deadline time.Time) (n uint64, late bool) {
	L := vm.L
	w := heapWalk{seen: map[unsafe.Pointer]bool{}, deadline: deadline}
	for _, v := range []glua.LValue{L.G.Global, L.G.Registry, L.Env} {
		w.add(v)
	}
	// Read raw: GetMetatable would return a __metatable field instead.
	mts := reflect.ValueOf(L.G).Elem().Field(builtinMtsField)
	for _, mt := range *(*map[int]glua.LValue)(unsafe.Pointer(mts.UnsafeAddr())) {
		w.add(mt)
	}
	for _, v := range vm.loaded {
		w.add(v)
	}
	for _, p := range vm.held {
		if t := p.Value(); t != nil {
			w.add(t)
		}
	}
	for len(w.stack) > 0 && w.n <= limit && !w.late {
		v := w.stack[len(w.stack)-1]
		w.stack = w.stack[:len(w.stack)-1]
		switch x := v.(type) {
		case *glua.LTable:
			if w.n += tableStorage(x); w.n > limit {
				break
			}
			w.add(x.Metatable)
			v := reflect.ValueOf(x)
			for _, e := range values(v, tableFields.array) {
				w.add(e)
			}
			// Every key the table has had, deleted ones included: it
			// keeps them all.
			for _, k := range values(v, tableFields.keys) {
				w.add(k)
				w.add(x.RawGetH(k))
			}
		case *glua.LFunction:
			w.n += functionBytes + uint64(len(x.Upvalues))*valueBytes
			w.add(x.Env)
			for _, uv := range x.Upvalues {
				w.add(uv.Value())
			}
			w.proto(x.Proto)
		case *glua.LUserData:
			w.n += tableBytes
			w.add(x.Metatable)
			w.add(x.Env)
		}
	}
	return w.n, w.late
}

type heapWalk struct {
	n        uint64
	seen     map[unsafe.Pointer]bool
	stack    []glua.LValue // containers still to walk
	deadline time.Time     // zero for none
	work     int           // values added
	late     bool          // past the deadline: the walk is cut off
}

// first reports whether p is met for the first time.
func (w *heapWalk) first(p unsafe.Pointer) bool {
	if w.seen[p] {
		return false
	}
	w.seen[p] = true
	return true
}

// add counts a scalar, or stacks a container not yet seen. It looks at the
// clock now and then: one table can hold millions of values.
func (w *heapWalk) add(v glua.LValue) {
	if w.work++; w.work%4096 == 0 && !w.deadline.IsZero() && time.Now().After(w.deadline) {
		w.late = true
	}
	if w.late {
		return
	}
	switch x := v.(type) {
	case glua.LString:
		if len(x) < dedupStrings || w.first(unsafe.Pointer(unsafe.StringData(string(x)))) {
			w.n += boxBytes + uint64(len(x))
		}
	case glua.LNumber:
		w.n += boxBytes
	case *glua.LTable:
		if x != nil && w.first(unsafe.Pointer(x)) {
			w.stack = append(w.stack, x)
		}
	case *glua.LFunction:
		if x != nil && w.first(unsafe.Pointer(x)) {
			w.stack = append(w.stack, x)
		}
	case *glua.LUserData:
		if x != nil && w.first(unsafe.Pointer(x)) {
			w.stack = append(w.stack, x)
		}
	}
}

// proto counts a compiled function and those nested in it.
func (w *heapWalk) proto(p *glua.FunctionProto) {
	if p == nil || !w.first(unsafe.Pointer(p)) {
		return
	}
	w.add(glua.LString(p.SourceName)) // a chunk name can be a megabyte
	// By capacity: gopher-lua's compiler leaves every function with room
	// for 1024 instructions and their lines, 128 calls, and so on, which
	// an empty function keeps (17 KB), not by what it uses (a few bytes).
	w.n += protoBytes + uint64(cap(p.Code))*4 + uint64(cap(p.DbgSourcePositions))*8 +
		uint64(cap(p.Constants))*(valueBytes+16) + // with a string copy of each
		uint64(cap(p.FunctionPrototypes)+cap(p.DbgLocals))*8 + uint64(len(p.DbgLocals))*dbgLocalBytes +
		uint64(cap(p.DbgCalls))*uint64(unsafe.Sizeof(glua.DbgCall{})) + uint64(cap(p.DbgUpvalues))*16
	for _, c := range p.Constants {
		w.add(c)
	}
	for _, q := range p.FunctionPrototypes {
		w.proto(q) // nesting is bounded by the compiler's input checks
	}
}

// hold makes t, a table Go made and may pass to every call, a root of the
// walk for as long as Go holds it, which a weak pointer does not prevent.
// Without it the script could keep anything in the table unseen. The list
// is cleared of collected tables whenever it has doubled.
func (vm *VM) hold(t *glua.LTable) {
	if len(vm.held) >= 2*vm.heldLive+64 {
		vm.held = slices.DeleteFunc(vm.held, func(p weak.Pointer[glua.LTable]) bool { return p.Value() == nil })
		vm.heldLive = len(vm.held)
	}
	vm.held = append(vm.held, weak.Make(t))
}
