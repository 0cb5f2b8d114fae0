package aggregator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"perigee/aggregator/store"
	"perigee/binread"
	"perigee/files"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// Rollup tiers. Each store segment gets, per tier, a file of per-node
// buckets (sample count, sums, merged latency histogram) of the samples
// in it, so a long series query reads a few entries per node and segment
// instead of decoding every batch. Buckets are aligned to the unix epoch,
// so a step that is a whole number of buckets puts each in one step, and
// the tier answers exactly what the raw samples would. A node's bucket
// can be in more than one segment (a late batch lands in a later one):
// their sums add. The rollups of the segments being written are in
// memory; they are written once the segment is sealed. A segment without
// its files (written before a crash, or by an older version) is rolled up
// from its records in the background; until then a query reads its
// records.
var tiers = []struct {
	res  time.Duration
	name string
}{{time.Minute, "1m"}, {10 * time.Minute, "10m"}}

type bucketKey struct {
	node, region string
	start        int64 // unix seconds, a multiple of the tier's resolution
}

type bucket struct {
	n              uint64
	rps, cpu, errW float64 // sums; errW is error rate times rps
	lat            telemetry.HistogramSnapshot
}

// maxSegBuckets bounds the buckets of one segment's rollup, all tiers
// together: live data from 500 nodes takes 33,000 an hour. Samples no real
// fleet sends (each in a region of its own, or scattered over years) could
// otherwise make one segment's rollup any size; past the bound the rollup
// gives up and that segment's queries read its records.
const maxSegBuckets = 200_000

// maxSegKeyBytes bounds the names the keys of one segment's rollup hold:
// a region name on the wire may be a MiB, so the bucket count alone does
// not bound them. Live data from 500 nodes names a few MiB an hour.
const maxSegKeyBytes = 32 << 20

// segRollup is one segment's buckets, one map per tier; nil maps once it
// gave up (full).
type segRollup struct {
	tiers    []map[bucketKey]*bucket
	n        int
	keyBytes int
	full     bool
}

func newSegRollup() *segRollup {
	r := &segRollup{tiers: make([]map[bucketKey]*bucket, len(tiers))}
	for i := range r.tiers {
		r.tiers[i] = map[bucketKey]*bucket{}
	}
	return r
}

func (r *segRollup) add(b *wire.Batch) {
	for i := range b.Samples {
		if r.full {
			return
		}
		s := &b.Samples[i]
		p := reduce(s)
		for ti, tier := range tiers {
			k := bucketKey{b.Node, s.Region, bucketStart(p.T, tier.res)}
			bk := r.tiers[ti][k]
			if bk == nil {
				r.n++
				r.keyBytes += len(k.node) + len(k.region)
				if r.n > maxSegBuckets || r.keyBytes > maxSegKeyBytes {
					r.full, r.tiers = true, nil
					return
				}
				bk = &bucket{}
				r.tiers[ti][k] = bk
			}
			bk.n++
			bk.rps += p.RPS
			bk.cpu += p.CPU
			bk.errW += p.ErrRate * p.RPS
			p.Latency.addTo(&bk.lat)
		}
	}
}

// maxBucketSamples is more samples than one bucket of a segment holds.
const maxBucketSamples = 1 << 40

// valid reports whether b's figures are what add makes: at least one
// sample, and sums of figures each within maxFigure a sample (errW, a
// rate times a ratio, within its square), so no NaN nor infinity, nor a
// sum that could overflow to one. A rollup file is read from disk,
// outside input.
func (b *bucket) valid() bool {
	if b.n == 0 || b.n > maxBucketSamples {
		return false
	}
	n := float64(b.n)
	return math.Abs(b.rps) <= n*maxFigure && math.Abs(b.cpu) <= n*maxFigure && math.Abs(b.errW) <= n*maxFigure*maxFigure
}

// bucketStart is the start of t's bucket of resolution res, in unix seconds.
func bucketStart(t time.Time, res time.Duration) int64 {
	return t.Unix() / int64(res/time.Second) * int64(res/time.Second)
}

// rollups holds the rollups of the segments not yet written out.
type rollups struct {
	dir string
	// gate is held shared by an ingest from its append until its batch is
	// added here, and taken by sealing to wait those out: after that no
	// batch can still be added to a sealed segment.
	gate sync.RWMutex
	mu   sync.Mutex
	open map[uint64]*segRollup
}

func newRollups(dir string) *rollups {
	return &rollups{dir: dir, open: map[uint64]*segRollup{}}
}

func (r *rollups) add(seg uint64, b *wire.Batch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sr := r.open[seg]
	if sr == nil {
		sr = newSegRollup()
		r.open[seg] = sr
	}
	sr.add(b)
}

func (r *rollups) path(seg uint64, tier int) string {
	return filepath.Join(r.dir, fmt.Sprintf("seg-%010d.%s", seg, tiers[tier].name))
}

// each hands fn the buckets of segment seg in a tier, from memory or its
// file, whose size it takes from budget first (false once spent). It
// reports false when it has neither.
func (r *rollups) each(seg uint64, tier int, budget *decodeBudget, fn func(bucketKey, *bucket)) (bool, error) {
	r.mu.Lock()
	if sr := r.open[seg]; sr != nil {
		defer r.mu.Unlock()
		if sr.full {
			return false, nil
		}
		for k, b := range sr.tiers[tier] {
			fn(k, b)
		}
		return true, nil
	}
	r.mu.Unlock()
	data, err := files.Read(r.path(seg, tier), maxRollupBytes)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !budget.take(uint64(len(data))) {
		return false, nil
	}
	err = decodeRollup(data, fn)
	if errors.Is(err, errGaveUp) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", r.path(seg, tier), err)
	}
	return true, nil
}

// Rollup file: "PGRU" | flag byte | entries | CRC-32C of what precedes it
// (u32 LE). The flag is 0, or 1 for a segment whose rollup gave up (no
// entries follow: read its records).
// An entry: node, region (uvarint length + bytes), bucket start (varint
// unix seconds), sample count (uvarint), sums of rps, cpu and errW
// (float64 LE each), latency histogram (telemetry.AppendBinary).
const rollupMagic = "PGRU"

var (
	errRollup = errors.New("malformed rollup file")
	errGaveUp = errors.New("rollup gave up: too many buckets")
)

// maxRollupBytes bounds a rollup file, which is all of one that a query
// reads: one that would be larger is written as given up. Within the
// bucket and name bounds a segment's rollup is a few MiB for live data,
// but each bucket's histogram may take 6 KiB.
const maxRollupBytes = 64 << 20

func encodeRollup(r *segRollup, tier int) []byte {
	gaveUp := append([]byte(rollupMagic), 1)
	gaveUp = binary.LittleEndian.AppendUint32(gaveUp, crc32.Checksum(gaveUp, castagnoli))
	if r.full {
		return gaveUp
	}
	b := append([]byte(rollupMagic), 0)
	for k, v := range r.tiers[tier] {
		b = binary.AppendUvarint(b, uint64(len(k.node)))
		b = append(b, k.node...)
		b = binary.AppendUvarint(b, uint64(len(k.region)))
		b = append(b, k.region...)
		b = binary.AppendVarint(b, k.start)
		b = binary.AppendUvarint(b, v.n)
		for _, f := range []float64{v.rps, v.cpu, v.errW} {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
		}
		b = v.lat.AppendBinary(b)
		if len(b) > maxRollupBytes-4 {
			return gaveUp
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// decodeRollup checks a file whole before it hands fn any entry: it is
// read from disk, so it is checked like any outside input, and a file
// found bad halfway must not have been half counted.
func decodeRollup(data []byte, fn func(bucketKey, *bucket)) error {
	if len(data) < len(rollupMagic)+4 || string(data[:len(rollupMagic)]) != rollupMagic {
		return errRollup
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return fmt.Errorf("%w: checksum", errRollup)
	}
	switch body = body[len(rollupMagic):]; {
	case len(body) == 1 && body[0] == 1:
		return errGaveUp
	case len(body) == 0 || body[0] != 0:
		return fmt.Errorf("%w: flag", errRollup)
	}
	if err := readRollup(body[1:], func(bucketKey, *bucket) {}); err != nil {
		return err
	}
	return readRollup(body[1:], fn)
}

func readRollup(entries []byte, fn func(bucketKey, *bucket)) error {
	r := binread.New(entries, errRollup)
	for r.Len() > 0 && r.Err() == nil {
		var k bucketKey
		var v bucket
		k.node = string(r.Bytes(wire.MaxNodeName, "node"))
		k.region = string(r.Bytes(1<<10, "region"))
		k.start = r.Varint("start")
		v.n = r.Uvarint("count")
		v.rps, v.cpu, v.errW = r.Float64("rps"), r.Float64("cpu"), r.Float64("errW")
		v.lat = telemetry.ReadHistogram(r)
		if r.Err() == nil && !v.valid() {
			r.Fail("figures")
		}
		if r.Err() == nil {
			fn(k, &v)
		}
	}
	return r.Err()
}

// rollupEvery is how often sealed segments get their rollup files.
const rollupEvery = 10 * time.Second

func (s *server) rollupLoop(ctx context.Context) {
	t := time.NewTicker(rollupEvery)
	defer t.Stop()
	for {
		s.writeRollups(ctx, false)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// writeRollups writes the rollup files of every sealed segment that has
// none, from memory for those this process wrote, else from the segment's
// records; and deletes the files of segments retention removed. Once the
// store is closed (at shutdown) every segment is sealed, and only what is
// in memory is written, so that stopping stays quick.
func (s *server) writeRollups(ctx context.Context, closed bool) {
	segs := s.store.Segments()
	if !closed {
		segs = segs[:len(segs)-1] // the one being written
	}
	r := s.rollups
	r.gate.Lock() // every batch appended so far is added
	r.gate.Unlock()
	for _, seg := range segs {
		if ctx.Err() != nil {
			return
		}
		if _, err := os.Stat(r.path(seg.ID, len(tiers)-1)); err == nil {
			continue
		}
		r.mu.Lock()
		sr := r.open[seg.ID]
		r.mu.Unlock()
		from := "memory"
		if sr == nil && closed {
			continue
		}
		if sr == nil {
			from = "records"
			sr = newSegRollup()
			err := s.store.ScanSegment(seg.ID, func(at time.Time, rec []byte, _ store.Pos) error {
				if b, ok := s.openStored(rec, nil); ok {
					restamp(b, at, s.cfg.MaxSkew)
					sr.add(b)
				}
				return ctx.Err()
			})
			if err != nil {
				if ctx.Err() == nil {
					s.log.Error("rolling up a segment", "segment", seg.ID, "err", err)
				}
				continue
			}
		}
		// The coarsest tier last: its file says the segment is done.
		var err error
		for i := range tiers {
			if _, err = files.WriteAtomic(r.path(seg.ID, i), encodeRollup(sr, i)); err != nil {
				break
			}
		}
		if err != nil {
			s.log.Error("writing rollups", "segment", seg.ID, "err", err)
			continue
		}
		r.mu.Lock()
		delete(r.open, seg.ID)
		r.mu.Unlock()
		s.log.Debug("segment rolled up", "segment", seg.ID, "from", from)
	}
	s.pruneRollups()
}

// pruneRollups deletes the rollups of segments no longer in the store.
func (s *server) pruneRollups() {
	segs := s.store.Segments()
	oldest := segs[0].ID
	r := s.rollups
	r.mu.Lock()
	for id := range r.open {
		if id < oldest {
			delete(r.open, id)
		}
	}
	r.mu.Unlock()
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		num, _, _ := strings.Cut(strings.TrimPrefix(e.Name(), "seg-"), ".")
		if id, err := strconv.ParseUint(num, 10, 64); err == nil && id < oldest {
			os.Remove(filepath.Join(r.dir, e.Name()))
		}
	}
}

// tierFor is the coarsest tier of which step is a whole number of
// buckets, or -1 when none is.
func tierFor(step time.Duration) int {
	for i := len(tiers) - 1; i >= 0; i-- {
		if step%tiers[i].res == 0 {
			return i
		}
	}
	return -1
}

// seriesFromTier answers a series query from a rollup tier: per segment
// that may hold samples of the range, its buckets, or its records while it
// has no rollups yet. A bucket counts in the step its start falls in.
func (s *server) seriesFromTier(ctx context.Context, tier int, match func(node, region string) bool, from, to time.Time, step time.Duration) ([]SeriesPoint, error) {
	acc, budget := newSeriesAcc(from, to, step), s.newDecodeBudget()
	for _, seg := range s.store.Segments() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !seg.Newest.IsZero() && seg.Newest.Add(s.cfg.MaxSkew).Before(from) {
			continue // every sample in it is older than the range
		}
		ok, err := s.rollups.each(seg.ID, tier, budget, func(k bucketKey, b *bucket) {
			if match(k.node, k.region) {
				if h := acc.addSums(k.node, time.Unix(k.start, 0), int(b.n), b.rps, b.cpu, b.errW); h != nil {
					h.Merge(b.lat)
				}
			}
		})
		if err != nil {
			s.log.Warn("rollup unreadable, reading the segment's records", "err", err)
		}
		if acc.full {
			return nil, errTooManyCells
		}
		if budget.spent {
			return nil, s.overBudget()
		}
		if ok {
			continue
		}
		err = s.store.ScanSegment(seg.ID, func(at time.Time, rec []byte, _ store.Pos) error {
			if acc.full {
				return errTooManyCells
			}
			b, ok := s.openStored(rec, budget)
			if budget.spent {
				return s.overBudget()
			}
			if ok {
				restamp(b, at, s.cfg.MaxSkew)
				for i := range b.Samples {
					if smp := &b.Samples[i]; match(b.Node, smp.Region) {
						p := reduce(smp)
						p.T = time.Unix(bucketStart(p.T, tiers[tier].res), 0) // as its bucket would count
						acc.add(b.Node, p)
					}
				}
			}
			return ctx.Err()
		})
		if err == nil && acc.full {
			err = errTooManyCells
		}
		if err != nil {
			return nil, err
		}
	}
	return acc.points(), nil
}
