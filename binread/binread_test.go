package binread

import (
	"encoding/binary"
	"errors"
	"testing"
)

var errFormat = errors.New("bad frame")

func TestStickyErrorAndKind(t *testing.T) {
	r := New([]byte{0x80}, errFormat) // an unterminated varint
	if v := r.Uvarint("id"); v != 0 {
		t.Fatalf("got %d", v)
	}
	if !errors.Is(r.Err(), errFormat) {
		t.Fatalf("error %v does not wrap the format's sentinel", r.Err())
	}
	first := r.Err()
	r.Take(1, "later")
	if r.Err() != first {
		t.Fatalf("the first error did not stick: %v", r.Err())
	}
}

func TestZeroValueFails(t *testing.T) {
	var r Reader
	r.Byte("b")
	if !errors.Is(r.Err(), ErrMalformed) {
		t.Fatalf("zero Reader: %v", r.Err())
	}
}

func TestCountIsBackedByInput(t *testing.T) {
	for _, tc := range []struct {
		count, minSize, limit, left int
		ok                          bool
	}{
		{count: 4, minSize: 2, limit: 100, left: 8, ok: true},
		{count: 5, minSize: 2, limit: 100, left: 8, ok: false}, // 10 bytes needed, 8 left
		{count: 16_700_000, minSize: 1, limit: 1 << 30, left: 100, ok: false},
		{count: 50, minSize: 1, limit: 10, left: 100, ok: false}, // over the hard cap
		{count: 3, minSize: 0, limit: 10, left: 3, ok: true},     // minSize floors at 1
	} {
		b := binary.AppendUvarint(nil, uint64(tc.count))
		b = append(b, make([]byte, tc.left)...)
		r := New(b, nil)
		n := r.Count(tc.minSize, tc.limit, "records")
		if tc.ok != (r.Err() == nil) || (tc.ok && n != tc.count) {
			t.Errorf("%+v: n=%d err=%v", tc, n, r.Err())
		}
	}
}

func TestBytesAndEnd(t *testing.T) {
	b := binary.AppendUvarint(nil, 3)
	b = append(b, "abcz"...)
	r := New(b, nil)
	if got := string(r.Bytes(8, "name")); got != "abc" {
		t.Fatalf("got %q", got)
	}
	r.End()
	if r.Err() == nil {
		t.Fatal("a trailing byte was not reported")
	}
	r = New(append(binary.AppendUvarint(nil, 9), "abc"...), nil)
	if r.Bytes(8, "name") != nil || r.Err() == nil {
		t.Fatal("a length over the limit was read")
	}
}
