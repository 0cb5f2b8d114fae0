package aggregator

import (
	"errors"
	"math"
	"testing"
	"time"
)

// A rollup file's figures are checked as a batch's are: one written by
// something else, with a checksum to match, could hold a NaN or an
// infinity (which JSON cannot write: the series query answered 500), or a
// sample count of zero or one so large it read as negative (the step's
// average divided by it). Such a file is malformed, and the segment's
// records are read instead.
func TestRollupFileFiguresAreChecked(t *testing.T) {
	for name, b := range map[string]bucket{
		"NaN rate":          {n: 1, rps: math.NaN()},
		"infinite CPU":      {n: 1, cpu: math.Inf(1)},
		"sum past n × 1e12": {n: 2, rps: 3e12},
		"no samples":        {n: 0, rps: 1},
		"count past int64":  {n: 1 << 63, rps: 1},
	} {
		r := newSegRollup()
		r.tiers[0][bucketKey{"node-a", "eu-west", bucketStart(time.Now(), time.Minute)}] = &b
		err := decodeRollup(encodeRollup(r, 0), func(bucketKey, *bucket) { t.Errorf("%s: an entry handed on", name) })
		if !errors.Is(err, errRollup) {
			t.Errorf("%s: %v, want a malformed rollup", name, err)
		}
	}
}
