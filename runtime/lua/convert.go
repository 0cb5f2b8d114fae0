package lua

import (
	"math"
	"strconv"

	glua "github.com/yuin/gopher-lua"
)

// maxDepth stops conversion of self-referencing tables.
const maxDepth = 32

// Table is a Lua table filled from Go field by field, which spares a caller
// that converts many structs on every call the Go maps ToLua would need.
// Make one with VM.NewTable; pass it to Call or set it into another Table.
type Table struct{ t *glua.LTable }

// NewTable returns an empty table sized for arr sequence elements and rec
// named fields.
func (vm *VM) NewTable(arr, rec int) Table { return Table{vm.L.CreateTable(arr, rec)} }

// SetNumber sets t[key] to v.
func (t Table) SetNumber(key string, v float64) { t.t.RawSetString(key, glua.LNumber(v)) }

// SetString sets t[key] to v.
func (t Table) SetString(key, v string) { t.t.RawSetString(key, glua.LString(v)) }

// SetBool sets t[key] to v.
func (t Table) SetBool(key string, v bool) { t.t.RawSetString(key, glua.LBool(v)) }

// SetTable sets t[key] to v; a zero Table removes the field.
func (t Table) SetTable(key string, v Table) { t.t.RawSetString(key, v.lvalue()) }

// Append adds v at the end of t's sequence.
func (t Table) Append(v Table) { t.t.Append(v.lvalue()) }

func (t Table) lvalue() glua.LValue {
	if t.t == nil {
		return glua.LNil
	}
	return t.t
}

// ToLua converts a Go value to Lua. Supported: nil, bool, the integer and
// float kinds, string, []any, []string, []float64, map[string]any,
// map[string]float64, map[string]string and Table. Anything else becomes
// nil.
func ToLua(L *glua.LState, v any) glua.LValue {
	switch x := v.(type) {
	case nil:
		return glua.LNil
	case Table:
		return x.lvalue()
	case bool:
		return glua.LBool(x)
	case string:
		return glua.LString(x)
	case float64:
		return glua.LNumber(x)
	case float32:
		return glua.LNumber(x)
	case int:
		return glua.LNumber(x)
	case int64:
		return glua.LNumber(x)
	case int32:
		return glua.LNumber(x)
	case uint64:
		return glua.LNumber(x)
	case uint32:
		return glua.LNumber(x)
	case []any:
		t := L.CreateTable(len(x), 0)
		for _, e := range x {
			t.Append(ToLua(L, e))
		}
		return t
	case []string:
		t := L.CreateTable(len(x), 0)
		for _, e := range x {
			t.Append(glua.LString(e))
		}
		return t
	case []float64:
		t := L.CreateTable(len(x), 0)
		for _, e := range x {
			t.Append(glua.LNumber(e))
		}
		return t
	case map[string]any:
		t := L.CreateTable(0, len(x))
		for k, e := range x {
			t.RawSetString(k, ToLua(L, e))
		}
		return t
	case map[string]float64:
		t := L.CreateTable(0, len(x))
		for k, e := range x {
			t.RawSetString(k, glua.LNumber(e))
		}
		return t
	case map[string]string:
		t := L.CreateTable(0, len(x))
		for k, e := range x {
			t.RawSetString(k, glua.LString(e))
		}
		return t
	}
	return glua.LNil
}

// FromLua converts a Lua value to Go: numbers to float64, strings, booleans,
// nil, and tables to []any when they are sequences or map[string]any
// otherwise (number keys written in decimal). Functions and other values
// become nil, and tables nested deeper than 32 levels are cut off.
func FromLua(v glua.LValue) any { return fromLua(v, 0) }

func fromLua(v glua.LValue, depth int) any {
	switch x := v.(type) {
	case glua.LBool:
		return bool(x)
	case glua.LNumber:
		return float64(x)
	case glua.LString:
		return string(x)
	case *glua.LTable:
		if depth >= maxDepth {
			return nil
		}
		return tableFromLua(x, depth+1)
	}
	return nil
}

func tableFromLua(t *glua.LTable, depth int) any {
	n := t.Len()
	seq := true
	count := 0
	t.ForEach(func(k, _ glua.LValue) {
		count++
		if num, ok := k.(glua.LNumber); !ok || float64(num) != math.Trunc(float64(num)) || num < 1 || int(num) > n {
			seq = false
		}
	})
	if seq && count == n && n > 0 {
		out := make([]any, n)
		for i := range n {
			out[i] = fromLua(t.RawGetInt(i+1), depth)
		}
		return out
	}
	out := make(map[string]any, count)
	t.ForEach(func(k, e glua.LValue) {
		var key string
		switch kk := k.(type) {
		case glua.LString:
			key = string(kk)
		case glua.LNumber:
			key = strconv.FormatFloat(float64(kk), 'f', -1, 64)
		default:
			return
		}
		out[key] = fromLua(e, depth)
	})
	return out
}
