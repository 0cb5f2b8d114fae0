// Package telemetry is the metric model every part of Perigee shares:
// mergeable latency histograms, decaying averages, and the per-node sample
// that the mesh gossips, the policies read and the shipper sends.
package telemetry

import (
	"encoding/binary"
	"errors"
	"math"
	"math/bits"
	"sync/atomic"
	"time"

	"perigee/binread"
)

// Buckets are log-linear over microseconds: values below 8µs get a bucket
// each, and every power of two above is split into 8 linear sub-buckets, so
// a quantile read from the bucket middle is within 6.25% of the truth.
// Because every histogram has the same bounds, two snapshots merge exactly by
// adding counts: a region's p99 is a true p99, not an average of p99s.
const (
	subBits    = 3
	subBuckets = 1 << subBits
	maxExp     = 40 // 2^40µs is about 12.7 days; longer values are clamped
	// NumBuckets is the fixed bucket count of every histogram.
	NumBuckets = subBuckets + (maxExp-subBits+1)*subBuckets
)

func bucketOf(us uint64) int {
	if us < subBuckets {
		return int(us)
	}
	e := bits.Len64(us) - 1
	if e > maxExp {
		return NumBuckets - 1
	}
	sub := int(us>>(e-subBits)) & (subBuckets - 1)
	return subBuckets + (e-subBits)*subBuckets + sub
}

// bucketBounds returns the half-open range [lo, hi) of bucket i, in µs.
func bucketBounds(i int) (lo, hi uint64) {
	if i < subBuckets {
		return uint64(i), uint64(i) + 1
	}
	e := (i-subBuckets)/subBuckets + subBits
	sub := uint64((i - subBuckets) % subBuckets)
	shift := e - subBits
	return (subBuckets + sub) << shift, (subBuckets + sub + 1) << shift
}

// BucketUpper is the exclusive upper bound of bucket i: what a Prometheus
// histogram calls its le.
func BucketUpper(i int) time.Duration {
	_, hi := bucketBounds(i)
	return time.Duration(hi) * time.Microsecond
}

// Histogram records durations without locks; it is safe for concurrent use.
type Histogram struct {
	counts [NumBuckets]atomic.Uint64
	sumUS  atomic.Uint64
}

// Observe records one duration. Negative durations count as zero.
func (h *Histogram) Observe(d time.Duration) {
	us := uint64(0)
	if d > 0 {
		us = uint64(d / time.Microsecond)
	}
	h.counts[bucketOf(us)].Add(1)
	h.sumUS.Add(us)
}

// Snapshot copies the cumulative counts.
func (h *Histogram) Snapshot() HistogramSnapshot {
	var s HistogramSnapshot
	for i := range h.counts {
		if c := h.counts[i].Load(); c != 0 {
			s.grow(i)
			s.Counts[i] = c
		}
	}
	s.SumUS = h.sumUS.Load()
	return s
}

// HistogramSnapshot is a histogram's counts at one instant. Counts may be
// shorter than NumBuckets: missing trailing buckets are zero.
type HistogramSnapshot struct {
	Counts []uint64 `json:"counts,omitempty"`
	SumUS  uint64   `json:"sum_us"`
}

func (s *HistogramSnapshot) grow(i int) {
	if i >= len(s.Counts) {
		s.Counts = append(s.Counts, make([]uint64, i+1-len(s.Counts))...)
	}
}

// Count is the number of observations.
func (s HistogramSnapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Mean is the average observation, or zero when there is none.
func (s HistogramSnapshot) Mean() time.Duration {
	n := s.Count()
	if n == 0 {
		return 0
	}
	return time.Duration(s.SumUS/n) * time.Microsecond
}

// Merge adds o's counts into s.
func (s *HistogramSnapshot) Merge(o HistogramSnapshot) {
	if len(o.Counts) > 0 {
		s.grow(len(o.Counts) - 1)
	}
	for i, c := range o.Counts {
		s.Counts[i] += c
	}
	s.SumUS += o.SumUS
}

// Sub returns the observations made between prev and s, where prev is an
// earlier snapshot of the same histogram.
func (s HistogramSnapshot) Sub(prev HistogramSnapshot) HistogramSnapshot {
	d := HistogramSnapshot{Counts: make([]uint64, len(s.Counts))}
	last := -1
	for i, c := range s.Counts {
		if i < len(prev.Counts) {
			c -= min(c, prev.Counts[i])
		}
		d.Counts[i] = c
		if c != 0 {
			last = i
		}
	}
	d.Counts = d.Counts[:last+1]
	if s.SumUS > prev.SumUS {
		d.SumUS = s.SumUS - prev.SumUS
	}
	return d
}

// Quantile returns the q-th quantile (0 ≤ q ≤ 1), read at the middle of the
// bucket it falls in, or zero for an empty snapshot.
func (s HistogramSnapshot) Quantile(q float64) time.Duration {
	n := s.Count()
	if n == 0 {
		return 0
	}
	q = math.Max(0, math.Min(1, q))
	rank := uint64(math.Ceil(q * float64(n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range s.Counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketBounds(i)
			return time.Duration((lo+hi)/2) * time.Microsecond
		}
	}
	return 0
}

// AppendBinary encodes s compactly: the sum, then (gap, count) varint pairs
// for the non-zero buckets only. A typical latency histogram is a few dozen
// bytes, which is what lets the mesh gossip one per service.
func (s HistogramSnapshot) AppendBinary(b []byte) []byte {
	b = binary.AppendUvarint(b, s.SumUS)
	nonZero := 0
	for _, c := range s.Counts {
		if c != 0 {
			nonZero++
		}
	}
	b = binary.AppendUvarint(b, uint64(nonZero))
	prev := -1
	for i, c := range s.Counts {
		if c == 0 {
			continue
		}
		b = binary.AppendUvarint(b, uint64(i-prev-1))
		b = binary.AppendUvarint(b, c)
		prev = i
	}
	return b
}

var errHistogram = errors.New("telemetry: malformed histogram encoding")

// DecodeHistogram reads what AppendBinary wrote from the front of b and
// returns the rest of b.
func DecodeHistogram(b []byte) (HistogramSnapshot, []byte, error) {
	r := binread.New(b, errHistogram)
	s := ReadHistogram(r)
	if err := r.Err(); err != nil {
		return HistogramSnapshot{}, nil, err
	}
	return s, r.Rest(), nil
}

// ReadHistogram reads what AppendBinary wrote from r; a failure is r's
// error.
func ReadHistogram(r *binread.Reader) HistogramSnapshot {
	var s HistogramSnapshot
	s.SumUS = r.Uvarint("histogram sum")
	n := r.Count(2, NumBuckets, "histogram buckets") // a (gap, count) pair each
	idx := -1
	for range n {
		gap := r.Uvarint("histogram gap")
		c := r.Uvarint("histogram count")
		if r.Err() != nil {
			return HistogramSnapshot{}
		}
		if gap >= NumBuckets || idx+1+int(gap) >= NumBuckets {
			r.Fail("histogram bucket out of range")
			return HistogramSnapshot{}
		}
		idx += 1 + int(gap)
		s.grow(idx)
		s.Counts[idx] = c
	}
	return s
}
