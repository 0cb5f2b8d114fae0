package meter

import "fmt"

// Opcodes the rewriter emits or looks for.
const (
	opUnreachable  = 0x00
	opBlock        = 0x02
	opLoop         = 0x03
	opIf           = 0x04
	opElse         = 0x05
	opEnd          = 0x0b
	opReturn       = 0x0f
	opCall         = 0x10
	opCallIndirect = 0x11
	opLocalGet     = 0x20
	opLocalSet     = 0x21
	opGlobalGet    = 0x23
	opGlobalSet    = 0x24
	opMemorySize   = 0x3f
	opMemoryGrow   = 0x40
	opI32Const     = 0x41
	opI64Const     = 0x42
	opI32GtU       = 0x4b
	opI64LtS       = 0x53
	opI32Add       = 0x6a
	opI32Sub       = 0x6b
	opI64Sub       = 0x7d
	opI64Shl       = 0x86
	opI64ShrU      = 0x88
	opI64ExtendU   = 0xad
	opRefFunc      = 0xd2
	opPrefixFC     = 0xfc
	opPrefixSIMD   = 0xfd
	blockVoid      = 0x40

	i32 = 0x7f
	i64 = 0x7e
)

// costWidth is the width of a charge's i64.const, written before the cost
// of what follows is known and patched after.
const costWidth = 5

// pageShift is log2 of the WebAssembly page size.
const pageShift = 16

// chargeCost is what a charge itself runs, in instructions: a tight loop
// pays for its metering too.
const chargeCost = 8

// region is code paid for by one charge: a function body or a loop body,
// less the loops nested in it. Control only moves forward inside a
// region, so each of its instructions runs at most once per charge.
type region struct {
	at   int // offset of the charge's cost in the output
	cost int64
}

func (m *module) rewriteCode(b []byte) ([]byte, error) {
	r := reader{b: b}
	n := r.u32()
	if r.err == nil && uint64(n) != uint64(len(m.funcTypes))-uint64(m.funcImports) {
		return nil, fmt.Errorf("%d bodies for %d functions", n, len(m.funcTypes)-int(m.funcImports))
	}
	out := appendU32(nil, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		body := r.bytes(r.u32())
		if r.err != nil {
			break
		}
		fn := m.funcImports + i
		if len(body) > MaxBody {
			return nil, fmt.Errorf("function %d: body of %d bytes, the most allowed is %d", fn, len(body), MaxBody)
		}
		code, err := m.rewriteBody(m.types[m.funcTypes[fn]], body)
		if err != nil {
			return nil, fmt.Errorf("function %d: %w", fn, err)
		}
		out = appendU32(out, uint32(len(code)))
		out = append(out, code...)
	}
	return out, r.end()
}

// rewriteBody meters one function. Its body is wrapped in a block so that
// every way out (return, a branch to the function's label, falling off
// the end) passes the depth counter's decrement; traps need none, since a
// trapped instance is discarded.
func (m *module) rewriteBody(t funcType, body []byte) ([]byte, error) {
	r := reader{b: body}
	groups := r.u32()
	declStart := r.pos
	locals := uint64(len(t.params))
	for g := groups; g > 0 && r.err == nil; g-- {
		locals += uint64(r.u32())
		r.valType()
	}
	if r.err != nil {
		return nil, fmt.Errorf("locals: %w", r.err)
	}
	if locals > MaxStack-frameBase {
		return nil, fmt.Errorf("%d locals, the most allowed is %d", locals, MaxStack-frameBase)
	}
	if m.locals += locals; m.locals > MaxLocals {
		return nil, fmt.Errorf("%d locals in all (so far), the most allowed is %d", m.locals, MaxLocals)
	}
	scratch := uint32(locals) // an i32 for bulk-operation lengths
	weight := int64(frameBase + locals)

	out := make([]byte, 0, len(body)+len(body)/4+64)
	out = appendU32(out, groups+1)
	out = append(out, body[declStart:r.pos]...)
	out = append(out, 1, i32)

	// Entry: count the frame, pay for the body, open the wrapper.
	out = m.appendDepth(out, opI32Add, weight)
	out = append(out, opGlobalGet)
	out = appendU32(out, m.depthGlobal)
	out = append(out, opI32Const)
	out = appendS64(out, MaxStack)
	out = append(out, opI32GtU, opIf, blockVoid, opUnreachable, opEnd)
	regions := []region{{cost: chargeCost}}
	out = m.appendCharge(out, &regions[0])
	out = append(out, opBlock)
	out = m.appendBlockType(out, t.results)

	depth := 0 // control frames open inside the wrapper
	var loops []bool
	for r.err == nil {
		start := r.pos
		op := r.byte()
		cur := &regions[len(regions)-1]
		cur.cost++
		switch op {
		case opEnd:
			if depth == 0 {
				if !r.done() {
					return nil, fmt.Errorf("code after the function's end at byte %d", r.pos)
				}
				for _, g := range regions {
					patchCost(out, g)
				}
				out = append(out, opEnd)
				out = m.appendDepth(out, opI32Sub, weight)
				return append(out, opEnd), nil
			}
			depth--
			if loops[depth] {
				patchCost(out, regions[len(regions)-1])
				regions = regions[:len(regions)-1]
			}
			loops = loops[:depth]
			out = append(out, op)
		case opBlock, opIf, opLoop:
			r.blockType(len(m.types))
			out = append(out, body[start:r.pos]...)
			depth++
			loops = append(loops, op == opLoop)
			if op == opLoop {
				regions = append(regions, region{cost: chargeCost})
				out = m.appendCharge(out, &regions[len(regions)-1])
			}
		case opReturn:
			out = append(out, 0x0c) // br to the wrapper
			out = appendU32(out, uint32(depth))
		case opCall:
			f := r.u32()
			if f < m.funcImports {
				cur.cost += HostCallCost
			}
			out = append(out, op)
			out = appendU32(out, m.shift(f))
		case opCallIndirect:
			// The table may hold imported functions.
			cur.cost += HostCallCost
			r.u32()
			r.u32()
			out = append(out, body[start:r.pos]...)
		case opMemoryGrow:
			r.u32()
			out = m.appendGrowCharge(out, scratch)
			out = append(out, body[start:r.pos]...)
		case opRefFunc:
			out = append(out, op)
			out = appendU32(out, m.shift(r.u32()))
		case opPrefixFC:
			sub := r.u32()
			shift, bulk := bulkOps[sub]
			if err := skipFC(&r, sub); err != nil {
				return nil, err
			}
			if bulk {
				out = m.appendBulkCharge(out, scratch, shift)
			}
			out = append(out, body[start:r.pos]...)
		default:
			if err := skip(&r, op); err != nil {
				return nil, fmt.Errorf("at byte %d: %w", start, err)
			}
			out = append(out, body[start:r.pos]...)
		}
	}
	if r.err == errTruncated {
		return nil, fmt.Errorf("body ends before its end instruction")
	}
	return nil, r.err
}

// bulkOps are the 0xfc operations whose last operand is a length, with the
// shift that turns it into fuel.
var bulkOps = map[uint32]int64{
	8:  bulkShift, // memory.init
	10: bulkShift, // memory.copy
	11: bulkShift, // memory.fill
	12: 0,         // table.init
	14: 0,         // table.copy
	15: 0,         // table.grow
	17: 0,         // table.fill
}

// appendDepth adds weight to the depth counter (op i32.add) or takes it
// off (i32.sub).
func (m *module) appendDepth(out []byte, op byte, weight int64) []byte {
	out = append(out, opGlobalGet)
	out = appendU32(out, m.depthGlobal)
	out = append(out, opI32Const)
	out = appendS64(out, weight)
	out = append(out, op, opGlobalSet)
	return appendU32(out, m.depthGlobal)
}

// appendCharge takes g's cost off the fuel, to be patched in once known.
func (m *module) appendCharge(out []byte, g *region) []byte {
	out = append(out, opGlobalGet)
	out = appendU32(out, m.fuelGlobal)
	out = append(out, opI64Const)
	g.at = len(out)
	out = append(out, make([]byte, costWidth)...)
	out = append(out, opI64Sub, opGlobalSet)
	out = appendU32(out, m.fuelGlobal)
	return m.appendRefuel(out)
}

// appendBulkCharge takes the length on top of the stack, shifted right by
// shift, off the fuel, leaving the stack as it was.
func (m *module) appendBulkCharge(out []byte, scratch uint32, shift int64) []byte {
	out = append(out, opLocalSet)
	out = appendU32(out, scratch)
	out = append(out, opGlobalGet)
	out = appendU32(out, m.fuelGlobal)
	out = append(out, opLocalGet)
	out = appendU32(out, scratch)
	out = append(out, opI64ExtendU, opI64Const)
	out = appendS64(out, shift)
	out = append(out, opI64ShrU, opI64Sub, opGlobalSet)
	out = appendU32(out, m.fuelGlobal)
	out = m.appendRefuel(out)
	out = append(out, opLocalGet)
	return appendU32(out, scratch)
}

// appendGrowCharge charges memory.grow for the memory it may have to copy
// and clear: the size it asks for, in bytes, once per bulkShift.
func (m *module) appendGrowCharge(out []byte, scratch uint32) []byte {
	out = append(out, opLocalSet)
	out = appendU32(out, scratch)
	out = append(out, opGlobalGet)
	out = appendU32(out, m.fuelGlobal)
	out = append(out, opLocalGet)
	out = appendU32(out, scratch)
	out = append(out, opMemorySize, 0, opI32Add, opI64ExtendU, opI64Const)
	out = appendS64(out, pageShift-bulkShift)
	out = append(out, opI64Shl, opI64Sub, opGlobalSet)
	out = appendU32(out, m.fuelGlobal)
	out = m.appendRefuel(out)
	out = append(out, opLocalGet)
	return appendU32(out, scratch)
}

// appendRefuel calls the host for more fuel once it is spent.
func (m *module) appendRefuel(out []byte) []byte {
	out = append(out, opGlobalGet)
	out = appendU32(out, m.fuelGlobal)
	out = append(out, opI64Const, 0, opI64LtS, opIf, blockVoid, opCall)
	out = appendU32(out, m.refuelFunc)
	out = append(out, opGlobalSet)
	out = appendU32(out, m.fuelGlobal)
	return append(out, opEnd)
}

// appendBlockType writes the block type of a block yielding results.
func (m *module) appendBlockType(out []byte, results []byte) []byte {
	switch len(results) {
	case 0:
		return append(out, blockVoid)
	case 1:
		return append(out, results[0])
	}
	idx, ok := m.resultTypes[string(results)]
	if !ok {
		for i, t := range m.types {
			if len(t.params) == 0 && string(t.results) == string(results) {
				idx, ok = uint32(i), true
				break
			}
		}
		if !ok {
			idx = uint32(len(m.types)) + 1 + uint32(len(m.extra))
			m.extra = append(m.extra, funcType{results: results})
		}
		m.resultTypes[string(results)] = idx
	}
	return appendS64(out, int64(idx))
}

// patchCost writes g's cost as a padded signed LEB128 of costWidth bytes.
func patchCost(out []byte, g region) {
	v := min(g.cost, 1<<(7*costWidth-1)-1)
	for i := range costWidth {
		b := byte(v>>(7*i)) & 0x7f
		if i < costWidth-1 {
			b |= 0x80
		}
		out[g.at+i] = b
	}
}

// skip reads the immediates of op, a one-byte opcode or the SIMD prefix.
func skip(r *reader, op byte) error {
	switch {
	case op == opUnreachable, op == 0x01, op == opElse, op == opReturn,
		op == 0x1a, op == 0x1b, // drop, select
		op >= 0x45 && op <= 0xc4, // numeric, sign extension
		op == 0xd1:               // ref.is_null
	case op == 0x0c, op == 0x0d, // br, br_if
		op >= 0x20 && op <= 0x26, // local.*, global.*, table.get/set
		op == opMemorySize:
		r.u32()
	case op == 0x0e: // br_table
		n := r.u32()
		if n > MaxBrTable {
			return fmt.Errorf("br_table of %d targets, the most allowed is %d", n, MaxBrTable)
		}
		for ; n > 0 && r.err == nil; n-- {
			r.u32()
		}
		r.u32()
	case op == 0x1c: // select t*
		r.valTypes()
	case op >= 0x28 && op <= 0x3e: // loads and stores
		r.memArg()
	case op == opI32Const, op == opI64Const:
		r.s64()
	case op == 0x43:
		r.bytes(4)
	case op == 0x44:
		r.bytes(8)
	case op == 0xd0: // ref.null
		r.byte()
	case op == opPrefixSIMD:
		return skipSIMD(r)
	default:
		return fmt.Errorf("opcode %#x is not supported (WebAssembly 2.0 only)", op)
	}
	return nil
}

func skipFC(r *reader, sub uint32) error {
	switch {
	case sub <= 7: // saturating truncation
	case sub == 8: // memory.init
		r.u32()
		r.u32()
	case sub == 9, sub == 13: // data.drop, elem.drop
		r.u32()
	case sub == 10, sub == 12, sub == 14: // memory.copy, table.init, table.copy
		r.u32()
		r.u32()
	case sub == 11, sub >= 15 && sub <= 17: // memory.fill, table.grow/size/fill
		r.u32()
	default:
		if r.err == nil {
			return fmt.Errorf("opcode 0xfc %d is not supported", sub)
		}
	}
	return nil
}

func skipSIMD(r *reader) error {
	sub := r.u32()
	switch {
	case sub <= 11, sub == 92, sub == 93: // loads, store, load_zero
		r.memArg()
	case sub == 12, sub == 13: // v128.const, i8x16.shuffle
		r.bytes(16)
	case sub >= 21 && sub <= 34: // extract and replace lane
		r.byte()
	case sub >= 84 && sub <= 91: // load and store lane
		r.memArg()
		r.byte()
	case sub <= 255: // the rest of the final SIMD set has no immediates
	default:
		if r.err == nil {
			return fmt.Errorf("opcode 0xfd %d is not supported (relaxed SIMD)", sub)
		}
	}
	return nil
}
