// Package binread reads the project's varint-framed binary formats: mesh
// reports, learned RTT tables, telemetry frames and histograms.
//
// Every format is fed from outside (gossip, frames, files on disk), so a
// Reader never indexes past its input and never lets a value it read size an
// allocation the input cannot back: a length is checked against the bytes
// left, and a count against the bytes left divided by the smallest encoding
// of one element, and against a hard cap. The first error sticks and every
// later read returns zero, so a decoder reads straight through and checks
// Err once.
package binread

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrMalformed is wrapped by every error a Reader reports, unless the Reader
// was made with a format's own sentinel.
var ErrMalformed = errors.New("malformed input")

// Reader consumes one input. The zero value reads nothing and reports
// ErrMalformed on the first read.
type Reader struct {
	b    []byte
	err  error
	kind error
}

// New reads b; errors wrap kind (ErrMalformed when nil), so each format
// keeps its own sentinel for errors.Is.
func New(b []byte, kind error) *Reader {
	if kind == nil {
		kind = ErrMalformed
	}
	return &Reader{b: b, kind: kind}
}

// Err is the first error, or nil.
func (r *Reader) Err() error { return r.err }

// Len is the number of bytes not yet read.
func (r *Reader) Len() int { return len(r.b) }

// Rest returns what has not been read, and consumes it.
func (r *Reader) Rest() []byte {
	b := r.b
	r.b = nil
	return b
}

// Fail records what went wrong, unless something already did, and stops
// every later read.
func (r *Reader) Fail(what string) {
	if r.err == nil {
		kind := r.kind
		if kind == nil {
			kind = ErrMalformed
		}
		r.err = fmt.Errorf("%w: %s", kind, what)
	}
	r.b = nil
}

// Failf is Fail with a format.
func (r *Reader) Failf(format string, args ...any) { r.Fail(fmt.Sprintf(format, args...)) }

// Uvarint reads an unsigned varint; what names the field in the error.
func (r *Reader) Uvarint(what string) uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.Fail("bad varint: " + what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Varint reads a zigzag-encoded signed varint.
func (r *Reader) Varint(what string) int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.Fail("bad varint: " + what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Byte reads one byte.
func (r *Reader) Byte(what string) byte {
	if len(r.b) < 1 {
		r.Fail("short input: " + what)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// Take returns the next n bytes, aliasing the input.
func (r *Reader) Take(n int, what string) []byte {
	if n < 0 || n > len(r.b) {
		r.Fail("short input: " + what)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// Bytes reads a uvarint length, at most limit, then that many bytes.
func (r *Reader) Bytes(limit int, what string) []byte {
	n := r.Uvarint(what)
	if r.err != nil {
		return nil
	}
	if n > uint64(limit) {
		r.Failf("%s: length %d over %d", what, n, limit)
		return nil
	}
	return r.Take(int(n), what)
}

// Float64 reads a little-endian IEEE 754 double.
func (r *Reader) Float64(what string) float64 {
	v := r.Take(8, what)
	if v == nil {
		return 0
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(v))
}

// Float32BE reads a big-endian IEEE 754 single.
func (r *Reader) Float32BE(what string) float64 {
	v := r.Take(4, what)
	if v == nil {
		return 0
	}
	return float64(math.Float32frombits(binary.BigEndian.Uint32(v)))
}

// Count reads the length of a collection whose elements each take at least
// minSize bytes (at least 1), and refuses one the bytes left cannot hold or
// that exceeds limit. A caller may then allocate Count elements: the input
// backs every one of them.
func (r *Reader) Count(minSize, limit int, what string) int {
	n := r.Uvarint(what)
	if r.err != nil {
		return 0
	}
	minSize = max(minSize, 1)
	if n > uint64(limit) {
		r.Failf("%s: count %d over %d", what, n, limit)
		return 0
	}
	if n > uint64(len(r.b)/minSize) {
		r.Failf("%s: count %d needs at least %d bytes, %d left", what, n, n*uint64(minSize), len(r.b))
		return 0
	}
	return int(n)
}

// End fails if anything is left unread.
func (r *Reader) End() {
	if r.err == nil && len(r.b) > 0 {
		r.Failf("%d trailing bytes", len(r.b))
	}
}
