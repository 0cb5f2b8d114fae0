// Package meter rewrites a WebAssembly module so that it pays, as it runs,
// for the work it does, and hands control back to its host often enough to
// be stopped.
//
// The rewritten module keeps a fuel counter in a global of its own. Every
// function entry and every loop header charges the instructions that can
// run from there before the next charge; memory.fill, memory.copy,
// memory.init and the table operations charge their length; a call to an
// imported (host) function charges HostCallCost. When the counter goes
// negative the module calls the host's Refuel import, which may stop it
// (by panicking, as any host function may) or return the next slice. So a
// guest without loops (a call tree, recursion) is metered like one with
// them, and whatever it does, it returns to the host at least once a slice.
//
// The module also counts its call depth, weighted by each function's frame
// size, and traps (unreachable) past MaxStack, so that deep recursion is
// stopped before the engine's own stack grows to hundreds of megabytes.
// A module's tables together may not hold more than MaxTable elements, and
// a br_table may not have more than MaxBrTable targets. What wazero keeps
// on the heap for each declaration, outside the memory cap, is bounded
// too (MaxFunctions, MaxGlobals, MaxElements, MaxDataSegments), and so is
// what its compiling takes (MaxLocals, MaxBody).
//
// Instrument reads every instruction and knows the immediates of the
// WebAssembly 2.0 instruction set (MVP, sign extension, saturating
// conversions, bulk memory, reference types, multi-value, SIMD); a module
// using anything else is refused with an error naming the opcode.
package meter

import (
	"errors"
	"fmt"
)

// The import the rewritten module calls when its fuel is spent:
// (func (result i64)), returning the next slice of fuel.
const (
	ImportModule = "perigee_meter"
	ImportRefuel = "refuel"
)

const (
	// HostCallCost is charged for each call to an imported function: what
	// the host does in it is not metered, and a loop of cheap host calls
	// must still run out of fuel.
	HostCallCost = 256
	// bulkShift converts a bulk memory operation's length in bytes to fuel:
	// one unit per 16 bytes.
	bulkShift = 4
	// MaxStack bounds the sum over the active calls of each function's
	// frame weight (frameBase plus its parameters and locals).
	MaxStack  = 1 << 20
	frameBase = 16
	// MaxTable is the most elements a module's tables may hold together.
	MaxTable = 1 << 20
	// MaxBrTable is the most targets a br_table may have. wazero's
	// compile time grows with the square of one table's size (1M targets,
	// a 1 MB module: 3 min 45 s and 2.7 GB), and stock Go's largest are
	// about a thousand.
	MaxBrTable = 1 << 14
	// MaxFunctions bounds a module's functions, imported and defined:
	// wazero keeps each one's definition and compiled form for as long as
	// the module is loaded, about 330 bytes of heap for an empty function
	// of 4 bytes. Stock Go guests have a few thousand.
	MaxFunctions = 1 << 18
	// MaxGlobals bounds a module's globals, imported and defined: each
	// instance holds each of them on the heap,
	// about 88 bytes for 5 in the module. Guests have a few dozen.
	MaxGlobals = 1 << 16
	// MaxElements bounds the elements of a module's element segments
	// together, each segment counting one for itself: each instance keeps
	// a passive segment's functions, about 40 bytes of heap for every byte
	// of the module, and a segment costs its instance about 70 bytes.
	MaxElements = 1 << 20
	// MaxDataSegments bounds a module's data segments: each costs each
	// instance 24 bytes of heap, for 2 in the module. Stock Go guests
	// have about 12,000 per MB of module.
	MaxDataSegments = 1 << 20
	// MaxLocals bounds the locals of a module's functions together (their
	// parameters included). A count of locals takes a few bytes however
	// large; compiling costs about 8 bytes of heap for each.
	MaxLocals = 1 << 24
	// MaxBody bounds a function's code. wazero's compiler takes about 50
	// times a function's size in heap while it works on it (8 MiB, 403
	// MiB); stock Go's largest functions have about 30 KB.
	MaxBody = 2 << 20
)

// Instrument returns the metered version of the module wasm.
func Instrument(wasm []byte) ([]byte, error) {
	m, err := parse(wasm)
	if err != nil {
		return nil, err
	}
	return m.rewrite()
}

var errTruncated = errors.New("unexpected end")

// section is one section of the input, its content not yet rewritten.
type section struct {
	id   byte
	body []byte
}

const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
)

// order is each known section's place in a module.
var order = map[byte]int{
	secType: 1, secImport: 2, secFunction: 3, secTable: 4, secMemory: 5, secGlobal: 6,
	secExport: 7, secStart: 8, secElement: 9, secDataCount: 10, secCode: 11, secData: 12,
}

type funcType struct{ params, results []byte }

type module struct {
	sections []section
	types    []funcType
	// funcTypes is the type of each function, imported ones first.
	funcTypes   []uint32
	funcImports uint32
	globals     uint32 // imported and defined
	locals      uint64 // of the functions rewritten so far, with their parameters

	// Indices in the rewritten module.
	refuelType, refuelFunc, fuelGlobal, depthGlobal uint32
	// resultTypes maps a result list to the type index of () -> results,
	// for multi-value wrapper blocks; extra are the types to append.
	resultTypes map[string]uint32
	extra       []funcType
}

func parse(wasm []byte) (*module, error) {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" {
		return nil, errors.New("not a WebAssembly module")
	}
	if string(wasm[4:8]) != "\x01\x00\x00\x00" {
		return nil, fmt.Errorf("WebAssembly binary version %x, want 1", wasm[4:8])
	}
	m := &module{resultTypes: map[string]uint32{}}
	r := reader{b: wasm[8:]}
	last := 0
	for !r.done() {
		id := r.byte()
		body := r.bytes(r.u32())
		if r.err != nil {
			return nil, fmt.Errorf("section %d: %w", id, r.err)
		}
		if id != secCustom {
			place, ok := order[id]
			if !ok {
				return nil, fmt.Errorf("unknown section id %d", id)
			}
			if place <= last {
				return nil, fmt.Errorf("section %d out of order or repeated", id)
			}
			last = place
		}
		m.sections = append(m.sections, section{id, body})
	}
	for _, s := range m.sections {
		var err error
		switch s.id {
		case secType:
			err = m.parseTypes(s.body)
		case secImport:
			err = m.parseImports(s.body)
		case secFunction:
			err = m.parseFunctions(s.body)
		case secGlobal:
			r := reader{b: s.body}
			n := r.u32()
			if err = r.err; err == nil {
				err = bounded(uint64(m.globals)+uint64(n), MaxGlobals, "globals")
			}
			m.globals += n
		case secData:
			r := reader{b: s.body}
			n := r.u32()
			if err = r.err; err == nil {
				err = bounded(uint64(n), MaxDataSegments, "data segments")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("section %d: %w", s.id, err)
		}
	}
	if err := bounded(uint64(len(m.funcTypes)), MaxFunctions, "functions"); err != nil {
		return nil, err
	}
	return m, nil
}

// bounded refuses a module that declares more of what than max: what it
// declares, wazero holds on the heap, outside the memory cap.
func bounded(n, max uint64, what string) error {
	if n > max {
		return fmt.Errorf("%d %s, the most allowed is %d", n, what, max)
	}
	return nil
}

func (m *module) parseTypes(b []byte) error {
	r := reader{b: b}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		if form := r.byte(); form != 0x60 && r.err == nil {
			return fmt.Errorf("type form %#x, want a function type", form)
		}
		params := r.valTypes()
		results := r.valTypes()
		m.types = append(m.types, funcType{params, results})
	}
	return r.end()
}

func (m *module) parseImports(b []byte) error {
	r := reader{b: b}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		mod := r.name()
		r.name()
		if mod == ImportModule {
			return fmt.Errorf("module imports from %s, which is the host's own", ImportModule)
		}
		switch kind := r.byte(); kind {
		case 0:
			t := r.u32()
			if r.err == nil && t >= uint32(len(m.types)) {
				return fmt.Errorf("import of type %d, out of range", t)
			}
			m.funcTypes = append(m.funcTypes, t)
			m.funcImports++
		case 1:
			r.byte()
			r.limits()
		case 2:
			r.limits()
		case 3:
			r.valType()
			r.byte()
			m.globals++
		default:
			if r.err == nil {
				return fmt.Errorf("import kind %d", kind)
			}
		}
	}
	return r.end()
}

func (m *module) parseFunctions(b []byte) error {
	r := reader{b: b}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		t := r.u32()
		if r.err == nil && t >= uint32(len(m.types)) {
			return fmt.Errorf("function of type %d, out of range", t)
		}
		m.funcTypes = append(m.funcTypes, t)
	}
	return r.end()
}

// shift maps a function index of the input to the rewritten module, where
// the refuel import comes after the other imported functions.
func (m *module) shift(f uint32) uint32 {
	if f >= m.funcImports {
		return f + 1
	}
	return f
}

func (m *module) rewrite() ([]byte, error) {
	m.refuelType = uint32(len(m.types))
	m.refuelFunc = m.funcImports
	m.fuelGlobal = m.globals
	m.depthGlobal = m.globals + 1
	m.ensure(secType)
	m.ensure(secImport)
	m.ensure(secGlobal)

	// The code section is rewritten first: its wrapper blocks may need
	// types the type section must then list.
	rewritten := make([][]byte, len(m.sections))
	for i, s := range m.sections {
		if s.id != secCode {
			continue
		}
		out, err := m.rewriteCode(s.body)
		if err != nil {
			return nil, fmt.Errorf("code: %w", err)
		}
		rewritten[i] = out
	}
	out := append([]byte(nil), "\x00asm\x01\x00\x00\x00"...)
	for i, s := range m.sections {
		body := rewritten[i]
		var err error
		switch s.id {
		case secType:
			body, err = m.rewriteTypes(s.body)
		case secImport:
			body, err = m.rewriteImports(s.body)
		case secTable:
			body, err = rewriteTables(s.body)
		case secGlobal:
			body, err = m.rewriteGlobals(s.body)
		case secExport:
			body, err = m.rewriteExports(s.body)
		case secStart:
			body, err = m.rewriteStart(s.body)
		case secElement:
			body, err = m.rewriteElements(s.body)
		case secCustom:
			body = m.rewriteCustom(s.body)
		case secCode:
		default:
			body = s.body
		}
		if err != nil {
			return nil, fmt.Errorf("section %d: %w", s.id, err)
		}
		out = append(out, s.id)
		out = appendU32(out, uint32(len(body)))
		out = append(out, body...)
	}
	return out, nil
}

// ensure adds an empty section of kind id where the order puts it, unless
// the module has one.
func (m *module) ensure(id byte) {
	at := len(m.sections)
	for i, s := range m.sections {
		if s.id == id {
			return
		}
		if s.id != secCustom && order[s.id] > order[id] && at == len(m.sections) {
			at = i
		}
	}
	m.sections = append(m.sections[:at], append([]section{{id, []byte{0}}}, m.sections[at:]...)...)
}

func (m *module) rewriteTypes(b []byte) ([]byte, error) {
	r := reader{b: b}
	n := r.u32()
	rest := r.rest()
	if r.err != nil {
		return nil, r.err
	}
	out := appendU32(nil, n+1+uint32(len(m.extra)))
	out = append(out, rest...)
	out = append(out, 0x60, 0, 1, i64)
	for _, t := range m.extra {
		out = append(out, 0x60)
		out = appendU32(out, uint32(len(t.params)))
		out = append(out, t.params...)
		out = appendU32(out, uint32(len(t.results)))
		out = append(out, t.results...)
	}
	return out, nil
}

func (m *module) rewriteImports(b []byte) ([]byte, error) {
	r := reader{b: b}
	n := r.u32()
	rest := r.rest()
	if r.err != nil {
		return nil, r.err
	}
	out := appendU32(nil, n+1)
	out = append(out, rest...)
	out = appendName(out, ImportModule)
	out = appendName(out, ImportRefuel)
	out = append(out, 0)
	return appendU32(out, m.refuelType), nil
}

// rewriteTables caps the tables' maxima so that together they hold at
// most MaxTable elements: each table keeps its initial size, and the room
// left goes to the tables in order, up to their own maxima. Tables live
// outside the memory cap, and a module may declare many.
func rewriteTables(b []byte) ([]byte, error) {
	type limits struct {
		refType   byte
		low, high uint32
	}
	r := reader{b: b}
	n := r.u32()
	var tables []limits
	var total uint64
	for ; n > 0 && r.err == nil; n-- {
		t := limits{refType: r.byte()}
		flags := r.byte()
		t.low = r.u32()
		t.high = max(t.low, MaxTable) // no maximum: as far as the total allows
		if flags&1 != 0 {
			t.high = r.u32()
		}
		if flags > 1 && r.err == nil {
			return nil, fmt.Errorf("table limits flags %#x", flags)
		}
		if t.high < t.low && r.err == nil {
			return nil, fmt.Errorf("table maximum %d below its minimum %d", t.high, t.low)
		}
		total += uint64(t.low)
		tables = append(tables, t)
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	if total > MaxTable {
		return nil, fmt.Errorf("tables of %d elements, the most allowed is %d", total, MaxTable)
	}
	room := MaxTable - uint32(total)
	out := appendU32(nil, uint32(len(tables)))
	for _, t := range tables {
		high := min(t.high, t.low+room)
		room -= high - t.low
		out = append(out, t.refType, 1)
		out = appendU32(out, t.low)
		out = appendU32(out, high)
	}
	return out, nil
}

// rewriteGlobals shifts ref.func in initialisers and adds the fuel counter
// and the depth counter.
func (m *module) rewriteGlobals(b []byte) ([]byte, error) {
	r := reader{b: b}
	n := r.u32()
	out := appendU32(nil, n+2)
	for ; n > 0 && r.err == nil; n-- {
		out = append(out, r.valType(), r.byte())
		out = m.constExpr(&r, out)
	}
	out = append(out, i64, 1, opI64Const, 0, opEnd)
	out = append(out, i32, 1, opI32Const, 0, opEnd)
	return out, r.end()
}

func (m *module) rewriteExports(b []byte) ([]byte, error) {
	r := reader{b: b}
	n := r.u32()
	out := appendU32(nil, n)
	for ; n > 0 && r.err == nil; n-- {
		out = appendName(out, r.name())
		kind := r.byte()
		idx := r.u32()
		if kind == 0 {
			idx = m.shift(idx)
		}
		out = append(out, kind)
		out = appendU32(out, idx)
	}
	return out, r.end()
}

func (m *module) rewriteStart(b []byte) ([]byte, error) {
	r := reader{b: b}
	f := r.u32()
	return appendU32(nil, m.shift(f)), r.end()
}

// rewriteElements shifts the function indices of element segments, in
// each of the eight encodings.
func (m *module) rewriteElements(b []byte) ([]byte, error) {
	r := reader{b: b}
	n := r.u32()
	out := appendU32(nil, n)
	var elements uint64
	for ; n > 0 && r.err == nil; n-- {
		flags := r.u32()
		if flags > 7 {
			return nil, fmt.Errorf("element segment flags %d", flags)
		}
		out = appendU32(out, flags)
		if flags&2 != 0 && flags&1 == 0 { // explicit table index
			out = appendU32(out, r.u32())
		}
		if flags&1 == 0 { // active: an offset
			out = m.constExpr(&r, out)
		}
		if flags&3 != 0 { // element kind or reference type
			out = append(out, r.byte())
		}
		count := r.u32()
		if elements += uint64(count) + 1; r.err == nil {
			if err := bounded(elements, MaxElements, "elements in element segments (each segment counts one)"); err != nil {
				return nil, err
			}
		}
		out = appendU32(out, count)
		for ; count > 0 && r.err == nil; count-- {
			if flags&4 != 0 {
				out = m.constExpr(&r, out)
			} else {
				out = appendU32(out, m.shift(r.u32()))
			}
		}
	}
	return out, r.end()
}

// constExpr copies a constant expression, shifting ref.func.
func (m *module) constExpr(r *reader, out []byte) []byte {
	for r.err == nil {
		op := r.byte()
		out = append(out, op)
		switch op {
		case opEnd:
			return out
		case opI32Const:
			out = appendS64(out, r.s64())
		case opI64Const:
			out = appendS64(out, r.s64())
		case 0x43:
			out = append(out, r.bytes(4)...)
		case 0x44:
			out = append(out, r.bytes(8)...)
		case opGlobalGet:
			out = appendU32(out, r.u32())
		case 0xd0:
			out = append(out, r.byte())
		case 0xd2:
			out = appendU32(out, m.shift(r.u32()))
		case 0xfd:
			if sub := r.u32(); sub != 12 && r.err == nil {
				r.fail(fmt.Errorf("opcode 0xfd %d in a constant expression", sub))
			}
			out = appendU32(out, 12)
			out = append(out, r.bytes(16)...)
		default:
			r.fail(fmt.Errorf("opcode %#x in a constant expression", op))
		}
	}
	return out
}

// rewriteCustom shifts the function indices of the name section; other
// custom sections, and a name section that does not parse, pass as they
// are (wazero ignores a bad name section too).
func (m *module) rewriteCustom(b []byte) []byte {
	r := reader{b: b}
	if r.name() != "name" || r.err != nil {
		return b
	}
	out := appendName(nil, "name")
	for !r.done() {
		id := r.byte()
		sub := reader{b: r.bytes(r.u32())}
		var body []byte
		switch id {
		case 1: // function names
			n := sub.u32()
			body = appendU32(nil, n)
			for ; n > 0 && sub.err == nil; n-- {
				body = appendU32(body, m.shift(sub.u32()))
				body = appendName(body, sub.name())
			}
		case 2: // local names, by function
			n := sub.u32()
			body = appendU32(nil, n)
			for ; n > 0 && sub.err == nil; n-- {
				body = appendU32(body, m.shift(sub.u32()))
				locals := sub.u32()
				body = appendU32(body, locals)
				for ; locals > 0 && sub.err == nil; locals-- {
					body = appendU32(body, sub.u32())
					body = appendName(body, sub.name())
				}
			}
		default:
			body = sub.rest()
		}
		if r.err != nil || sub.end() != nil {
			return b
		}
		out = append(out, id)
		out = appendU32(out, uint32(len(body)))
		out = append(out, body...)
	}
	return out
}
