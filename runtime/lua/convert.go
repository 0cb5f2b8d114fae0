package lua

import (
	"errors"
	"fmt"
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
// named fields. While the caller holds it, it counts toward what the state
// holds (see VM), with all a script put in it; a rebuild cannot empty it,
// so a caller that keeps tables between calls makes them anew after a
// call fails with ErrAllocation.
func (vm *VM) NewTable(arr, rec int) Table {
	t := vm.L.CreateTable(arr, rec)
	vm.hold(t)
	return Table{t}
}

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

// conversion converts a Lua value to Go within Limits.ConvertNodes values
// and Limits.ConvertBytes bytes. It counts every value it produces, so a
// table shared by many others costs as often as it appears in the result:
// the Go value is a tree, and it is the tree that a caller prints or
// stores.
type conversion struct {
	nodes, bytes       int
	maxNodes, maxBytes int
}

// ErrConversion is a value too large to convert to Go.
var ErrConversion = errors.New("value exceeds the conversion limit")

func (vm *VM) newConversion() *conversion {
	return &conversion{maxNodes: vm.limits.ConvertNodes, maxBytes: vm.limits.ConvertBytes}
}

// fromLua converts v to Go: numbers to float64, strings, booleans, nil,
// and tables to []any when they are sequences or map[string]any otherwise
// (number keys written in decimal). Functions and other values become nil,
// and tables nested deeper than 32 levels are cut off.
func (vm *VM) fromLua(v glua.LValue) (any, error) {
	c := vm.newConversion()
	out := c.value(v, 0)
	return out, c.err()
}

// err says which limit the conversion met, if any.
func (c *conversion) err() error {
	if c.nodes > c.maxNodes {
		return fmt.Errorf("%w of %d values", ErrConversion, c.maxNodes)
	}
	if c.bytes > c.maxBytes {
		return fmt.Errorf("%w of %d bytes", ErrConversion, c.maxBytes)
	}
	return nil
}

// value converts v, charging it as one value; the entries of a table are
// charged by the table (see table).
func (c *conversion) value(v glua.LValue, depth int) any {
	c.nodes++
	return c.entry(v, depth)
}

func (c *conversion) entry(v glua.LValue, depth int) any {
	switch x := v.(type) {
	case glua.LBool:
		c.bytes++
		return bool(x)
	case glua.LNumber:
		c.bytes += 8
		return float64(x)
	case glua.LString:
		c.bytes += len(x)
		return string(x)
	case *glua.LTable:
		c.bytes += 16
		if c.full() || depth >= maxDepth {
			return nil
		}
		return c.table(x, depth+1)
	}
	return nil
}

// table converts t after charging one value for every slot of it the
// conversion reads: its entries, and also the empty array slots and the
// keys Go cannot name, which it walks past. Without that, a table of a
// million nil slots, or of keys that are tables, would cost one value
// each of the ten thousand times it appears, and take seconds to convert.
func (c *conversion) table(t *glua.LTable, depth int) any {
	if c.nodes += tableSlots(t); c.full() {
		return nil
	}
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
		out := make([]any, 0, min(n, c.maxNodes))
		for i := 1; i <= n && !c.full(); i++ {
			out = append(out, c.entry(t.RawGetInt(i), depth))
		}
		return out
	}
	out := make(map[string]any, min(count, c.maxNodes))
	t.ForEach(func(k, e glua.LValue) {
		if c.full() {
			return
		}
		var key string
		switch kk := k.(type) {
		case glua.LString:
			key = string(kk)
		case glua.LNumber:
			key = strconv.FormatFloat(float64(kk), 'f', -1, 64)
		default:
			return
		}
		c.bytes += len(key)
		out[key] = c.entry(e, depth)
	})
	return out
}

func (c *conversion) full() bool { return c.nodes > c.maxNodes || c.bytes > c.maxBytes }
