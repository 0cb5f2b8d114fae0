package aggregator

import (
	"context"
	"time"

	"perigee/aggregator/store"
)

// seriesFromStore answers a series query that reaches past the memory
// window by reading the store, one batch at a time: memory is the
// accumulator's (steps × nodes) and one segment, however long the range.
// Batches that arrived before from are not decoded, since after restamp no
// sample in them is later than their arrival plus max_skew.
func (s *server) seriesFromStore(ctx context.Context, match func(node, region string) bool, from, to time.Time, step time.Duration) ([]SeriesPoint, error) {
	acc := newSeriesAcc(from, to, step)
	err := s.store.ScanSince(from.Add(-s.cfg.MaxSkew), func(at time.Time, rec []byte, _ store.Pos) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if acc.full {
			return errTooManyCells
		}
		if at.Add(s.cfg.MaxSkew).Before(from) {
			return nil
		}
		b, ok := s.openStored(rec)
		if !ok {
			return nil
		}
		restamp(b, at, s.cfg.MaxSkew)
		for i := range b.Samples {
			smp := &b.Samples[i]
			if match(b.Node, smp.Region) {
				acc.add(b.Node, reduce(smp))
			}
		}
		return nil
	})
	if err == nil && acc.full {
		err = errTooManyCells
	}
	if err != nil {
		return nil, err
	}
	return acc.points(), nil
}
