package wire

import (
	"encoding/binary"
	"math"
	"time"

	"perigee/binread"
)

// maxString bounds one string field; real ones are names, paths and
// addresses.
const maxString = 1 << 20

func newReader(b []byte) *binread.Reader { return binread.New(b, ErrMalformed) }

func readBool(r *binread.Reader, what string) bool { return r.Uvarint(what) != 0 }

// readTime reads what appendTime wrote relative to base.
func readTime(r *binread.Reader, base int64, what string) time.Time {
	u := r.Uvarint(what)
	if u == 0 {
		return time.Time{}
	}
	return time.Unix(0, base+unzigzag(u-1))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendFloat(b []byte, v float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// appendTime writes t as a nanosecond offset from base (the batch's own
// time), which keeps timestamps to a few bytes; zero time is 0.
func appendTime(b []byte, t time.Time, base int64) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	return binary.AppendUvarint(b, zigzag(t.UnixNano()-base)+1)
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }
