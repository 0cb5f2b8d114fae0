package aggregator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"perigee/aggregator/store"
)

// seriesFromStore answers a series query that reaches past the memory
// window by reading the store, one batch at a time: memory is the
// accumulator's (steps × nodes) and one segment, however long the range.
// Batches that arrived before from are not decoded, since after restamp no
// sample in them is later than their arrival plus max_skew.
func (s *server) seriesFromStore(ctx context.Context, match func(node, region string) bool, from, to time.Time, step time.Duration) ([]SeriesPoint, error) {
	acc, budget := newSeriesAcc(from, to, step), s.newDecodeBudget()
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
		b, ok := s.openStored(rec, budget)
		if budget.spent {
			return s.overBudget()
		}
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

// maxQueryDecode bounds what one series query decodes, the decompressed
// bytes of stored batches and the rollup files it reads, which is its
// CPU: a query past the memory window at a step no rollup tier serves
// decodes every batch of its window, however many, as does a tier query for a segment whose rollup gave up, and a
// tier query over a week may read 168 rollup files of up to 64 MiB.
// Batches of samples decoded at 20 MiB/s on a busy core (2026-12-03), so
// 256 MiB is some 13 s of one.
const maxQueryDecode = 256 << 20

// decodeBudget is what a query may still decode; spent once a batch did
// not fit.
type decodeBudget struct {
	left  uint64
	spent bool
}

func (s *server) newDecodeBudget() *decodeBudget {
	return &decodeBudget{left: uint64(cmp.Or(s.cfg.queryDecode, maxQueryDecode))}
}

// take takes n bytes, if they fit; a nil budget (no query's) takes any.
func (b *decodeBudget) take(n uint64) bool {
	if b == nil {
		return true
	}
	if b.spent || n > b.left {
		b.spent = true
		return false
	}
	b.left -= n
	return true
}

// errOverBudget is a query past its decode budget: a 422.
var errOverBudget = errors.New("the query would decode more stored batches than one query may")

func (s *server) overBudget() error {
	return fmt.Errorf("%w (%d KiB decompressed): a step of whole minutes is answered from the rollup tiers; or ask for a shorter window",
		errOverBudget, cmp.Or(s.cfg.queryDecode, maxQueryDecode)>>10)
}
