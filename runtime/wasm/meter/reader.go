package meter

import (
	"errors"
	"fmt"
)

// reader decodes the binary format. The first error sticks: later reads
// return zeros, so a parser checks err once, after a run of reads. Nothing
// it returns is allocated from a count it read: byte runs are slices of
// the input, and a count can only be used by reading that many items.
type reader struct {
	b   []byte
	pos int
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// done reports whether the input is used up, or unreadable.
func (r *reader) done() bool { return r.err != nil || r.pos >= len(r.b) }

// end is the error of a section or item that should have been read to its
// last byte.
func (r *reader) end() error {
	if r.err == nil && r.pos != len(r.b) {
		return fmt.Errorf("%d bytes left over", len(r.b)-r.pos)
	}
	return r.err
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.pos >= len(r.b) {
		r.fail(errTruncated)
		return 0
	}
	c := r.b[r.pos]
	r.pos++
	return c
}

func (r *reader) bytes(n uint32) []byte {
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(r.b)-r.pos) {
		r.fail(errTruncated)
		return nil
	}
	b := r.b[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return b
}

func (r *reader) rest() []byte { return r.bytes(uint32(len(r.b) - r.pos)) }

var errLEB = errors.New("malformed LEB128 number")

func (r *reader) u32() uint32 {
	var v uint64
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			if v > 1<<32-1 {
				r.fail(errLEB)
				return 0
			}
			return uint32(v)
		}
	}
	r.fail(errLEB)
	return 0
}

func (r *reader) s64() int64 {
	var v int64
	for shift := 0; shift < 70; shift += 7 {
		c := r.byte()
		v |= int64(c&0x7f) << shift
		if c&0x80 == 0 {
			if shift+7 < 64 && c&0x40 != 0 {
				v |= -1 << (shift + 7)
			}
			return v
		}
	}
	r.fail(errLEB)
	return 0
}

func (r *reader) name() string { return string(r.bytes(r.u32())) }

func isValType(t byte) bool {
	switch t {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f: // i32 i64 f32 f64 v128 funcref externref
		return true
	}
	return false
}

func (r *reader) valType() byte {
	t := r.byte()
	if r.err == nil && !isValType(t) {
		r.fail(fmt.Errorf("value type %#x is not supported", t))
	}
	return t
}

func (r *reader) valTypes() []byte {
	ts := r.bytes(r.u32())
	for _, t := range ts {
		if !isValType(t) {
			r.fail(fmt.Errorf("value type %#x is not supported", t))
		}
	}
	return ts
}

func (r *reader) limits() {
	flags := r.byte()
	if flags > 1 && r.err == nil {
		r.fail(fmt.Errorf("limits flags %#x (shared or 64-bit memory) are not supported", flags))
	}
	r.u32()
	if flags == 1 {
		r.u32()
	}
}

func (r *reader) memArg() {
	align := r.u32()
	if align >= 64 && r.err == nil {
		r.fail(errors.New("memory index in memarg (multiple memories) is not supported"))
	}
	r.u32()
}

// blockType reads a block type: empty, one value type, or the index of
// one of types types.
func (r *reader) blockType(types int) {
	if r.done() {
		r.fail(errTruncated)
		return
	}
	if c := r.b[r.pos]; c == blockVoid || isValType(c) {
		r.pos++
		return
	}
	if idx := r.s64(); r.err == nil && (idx < 0 || idx >= int64(types)) {
		r.fail(fmt.Errorf("block of type %d, out of range", idx))
	}
}

func appendU32(out []byte, v uint32) []byte {
	for v >= 0x80 {
		out = append(out, byte(v)|0x80)
		v >>= 7
	}
	return append(out, byte(v))
}

func appendS64(out []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(out, c)
		}
		out = append(out, c|0x80)
	}
}

func appendName(out []byte, s string) []byte {
	out = appendU32(out, uint32(len(s)))
	return append(out, s...)
}
