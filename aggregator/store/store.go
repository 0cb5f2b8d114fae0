// Package store is the aggregator's embedded on-disk store: an append-only
// log of accepted batches in time-bounded segment files. A record is
// durable (fsynced) before Append returns, which is what lets the
// aggregator acknowledge a batch; concurrent appends share one fsync.
// Retention deletes whole segments.
package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Record layout, all little endian:
//
//	magic "PGR2" | payload length (u32) | CRC-32C of length+time+payload (u32) |
//	time in unix ns (i64) | payload
//
// The magic lets replay find the next record after damaged bytes; the CRC,
// which covers the length too, tells a real record from a payload that
// happens to hold the magic. Segments written before the magic existed
// (version 1: length | CRC of time+payload | time | payload) are still read.
const (
	recMagic    = "PGR2"
	headerLen   = 20
	v1HeaderLen = 16
)

// MaxRecord bounds one record; a larger length field means a damaged file.
const MaxRecord = 1 << 30

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options tune segment rotation.
type Options struct {
	SegmentBytes int64         // rotate past this size; default 64 MiB
	SegmentAge   time.Duration // rotate when the segment is this old; default 1h
}

type segment struct {
	id     uint64
	newest time.Time // latest record time, for retention
}

// Store is safe for concurrent use.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	cur      *os.File
	curSize  int64
	curStart time.Time
	segs     []segment // ascending id; the last is cur
	gen      uint64    // records written
	broken   error     // a write could not be undone: refuse further appends
	damage   Damage    // found by replay

	syncMu  sync.Mutex
	durable atomic.Uint64 // records known to be on stable storage
}

// Open reads every segment in dir, handing each intact record to replay in
// order (see replaySegment for damage), and starts a new segment for
// appends.
func Open(dir string, opts Options, log *slog.Logger, replay func(at time.Time, rec []byte) error) (*Store, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 64 << 20
	}
	if opts.SegmentAge <= 0 {
		opts.SegmentAge = time.Hour
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	ids, err := segmentIDs(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, opts: opts, log: log}
	for i, id := range ids {
		newest, err := s.replaySegment(id, i == len(ids)-1, replay)
		if err != nil {
			return nil, err
		}
		s.segs = append(s.segs, segment{id: id, newest: newest})
	}
	if err := s.rotate(time.Now()); err != nil {
		return nil, err
	}
	return s, nil
}

func segmentIDs(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var ids []uint64
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "seg-") || !strings.HasSuffix(name, ".log") {
			continue
		}
		if id, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, "seg-"), ".log"), 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

func (s *Store) path(id uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("seg-%010d.log", id))
}

// replaySegment reads one segment. Damaged bytes cost only the records
// they hit: replay skips to the next record whose magic and checksum hold,
// and counts and logs what it skipped. The one thing it cuts is a record
// left incomplete at the very end of the last segment by a crash during
// its write, which was therefore never acknowledged.
func (s *Store) replaySegment(id uint64, last bool, replay func(time.Time, []byte) error) (time.Time, error) {
	path := s.path(id)
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, fmt.Errorf("store: %w", err)
	}
	v1 := len(b) > 0 && !bytes.HasPrefix(b, []byte(recMagic))
	decode := decodeRecord
	if v1 {
		decode = decodeV1Record
	}
	var newest time.Time
	off := 0
	for off < len(b) {
		at, rec, n, ok := decode(b[off:])
		if !ok {
			next := resync(b, off, v1)
			if next == len(b) && last && !v1 && incomplete(b[off:]) {
				s.log.Warn("store: cutting a record torn by a crash", "segment", path, "offset", off, "bytes", len(b)-off)
				if err := os.Truncate(path, int64(off)); err != nil {
					return time.Time{}, fmt.Errorf("store: truncate %s: %w", path, err)
				}
				break
			}
			s.damage.Regions++
			s.damage.Bytes += int64(next - off)
			s.log.Error("store: damaged bytes skipped, file kept", "segment", path, "offset", off, "bytes", next-off)
			off = next
			continue
		}
		if err := replay(at, rec); err != nil {
			return time.Time{}, fmt.Errorf("store: replay %s at %d: %w", path, off, err)
		}
		if at.After(newest) {
			newest = at
		}
		off += n
	}
	return newest, nil
}

// resync finds the first intact record after the damage at off, or the end
// of b. Version 1 records have no magic to look for: the rest of such a
// segment is skipped.
func resync(b []byte, off int, v1 bool) int {
	if v1 {
		return len(b)
	}
	for i := off + 1; i < len(b); {
		j := bytes.Index(b[i:], []byte(recMagic))
		if j < 0 {
			break
		}
		if _, _, _, ok := decodeRecord(b[i+j:]); ok {
			return i + j
		}
		i += j + 1
	}
	return len(b)
}

// incomplete reports whether b starts with a record that runs past its
// end: what a write cut short by a crash leaves.
func incomplete(b []byte) bool {
	if len(b) < headerLen {
		return true
	}
	return int64(binary.LittleEndian.Uint32(b[4:])) > int64(len(b)-headerLen)
}

func decodeRecord(b []byte) (at time.Time, rec []byte, n int, ok bool) {
	if len(b) < headerLen || string(b[:4]) != recMagic {
		return time.Time{}, nil, 0, false
	}
	size := binary.LittleEndian.Uint32(b[4:])
	if size > MaxRecord || int(size) > len(b)-headerLen {
		return time.Time{}, nil, 0, false
	}
	sum := crc32.Update(crc32.Checksum(b[4:8], castagnoli), castagnoli, b[12:headerLen+int(size)])
	if sum != binary.LittleEndian.Uint32(b[8:]) {
		return time.Time{}, nil, 0, false
	}
	return time.Unix(0, int64(binary.LittleEndian.Uint64(b[12:]))), b[headerLen : headerLen+int(size)], headerLen + int(size), true
}

func decodeV1Record(b []byte) (at time.Time, rec []byte, n int, ok bool) {
	if len(b) < v1HeaderLen {
		return time.Time{}, nil, 0, false
	}
	size := binary.LittleEndian.Uint32(b)
	if size > MaxRecord || int(size) > len(b)-v1HeaderLen {
		return time.Time{}, nil, 0, false
	}
	body := b[8 : v1HeaderLen+int(size)]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return time.Time{}, nil, 0, false
	}
	return time.Unix(0, int64(binary.LittleEndian.Uint64(b[8:]))), b[v1HeaderLen : v1HeaderLen+int(size)], v1HeaderLen + int(size), true
}

func appendRecord(dst []byte, at time.Time, rec []byte) []byte {
	start := len(dst)
	dst = append(dst, recMagic...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(rec)))
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(at.UnixNano()))
	dst = append(dst, rec...)
	sum := crc32.Update(crc32.Checksum(dst[start+4:start+8], castagnoli), castagnoli, dst[start+12:])
	binary.LittleEndian.PutUint32(dst[start+8:], sum)
	return dst
}

// rotate makes the old segment durable and starts a new one. Called with
// mu held, or before the store is shared.
func (s *Store) rotate(now time.Time) error {
	if s.cur != nil {
		if err := s.cur.Sync(); err != nil {
			return fmt.Errorf("store: sync segment: %w", err)
		}
		s.durable.Store(s.gen)
		if err := s.cur.Close(); err != nil {
			return fmt.Errorf("store: close segment: %w", err)
		}
	}
	var id uint64 = 1
	if n := len(s.segs); n > 0 {
		id = s.segs[n-1].id + 1
	}
	f, err := os.OpenFile(s.path(id), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("store: new segment: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return err
	}
	s.cur, s.curSize, s.curStart = f, 0, now
	s.segs = append(s.segs, segment{id: id})
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: sync dir: %w", err)
	}
	return nil
}

// Append stores rec with its time and returns once it is on stable storage.
func (s *Store) Append(at time.Time, rec []byte) error {
	if len(rec) > MaxRecord {
		return fmt.Errorf("store: record of %d bytes over the %d limit", len(rec), MaxRecord)
	}
	buf := appendRecord(make([]byte, 0, headerLen+len(rec)), at, rec)
	s.mu.Lock()
	if s.broken != nil {
		s.mu.Unlock()
		return s.broken
	}
	if s.curSize >= s.opts.SegmentBytes || at.Sub(s.curStart) >= s.opts.SegmentAge {
		if err := s.rotate(at); err != nil {
			s.broken = err
			s.mu.Unlock()
			return err
		}
	}
	if _, err := s.cur.Write(buf); err != nil {
		// Undo a partial write, or replay would stop at it and lose
		// every later record.
		if terr := s.cur.Truncate(s.curSize); terr != nil {
			s.broken = fmt.Errorf("store: write failed and could not be undone: %w", errors.Join(err, terr))
		}
		s.mu.Unlock()
		return fmt.Errorf("store: write: %w", err)
	}
	s.curSize += int64(len(buf))
	s.gen++
	gen := s.gen
	seg := &s.segs[len(s.segs)-1]
	if at.After(seg.newest) {
		seg.newest = at
	}
	s.mu.Unlock()
	return s.syncTo(gen)
}

// syncTo returns once record gen is durable. Whoever holds syncMu syncs
// everything written so far, so appends that queue behind it usually find
// their record already durable: one fsync serves a whole group.
func (s *Store) syncTo(gen uint64) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.durable.Load() >= gen {
		return nil
	}
	s.mu.Lock()
	target, f := s.gen, s.cur
	s.mu.Unlock()
	err := f.Sync()
	if s.durable.Load() >= gen {
		return nil // a rotation synced and closed the file under us
	}
	if err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	s.durable.Store(max(s.durable.Load(), target))
	return nil
}

// Prune deletes the segments whose newest record is before cutoff, except
// the one being written, and reports how many it removed.
func (s *Store) Prune(cutoff time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	removed := 0
	keep := s.segs[:0]
	for i, seg := range s.segs {
		if i < len(s.segs)-1 && seg.newest.Before(cutoff) {
			if err := os.Remove(s.path(seg.id)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return removed, fmt.Errorf("store: prune: %w", err)
			}
			removed++
			continue
		}
		keep = append(keep, seg)
	}
	s.segs = keep
	return removed, nil
}

// Close syncs and closes the current segment.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return nil
	}
	err := s.cur.Sync()
	if cerr := s.cur.Close(); err == nil {
		err = cerr
	}
	s.cur = nil
	s.broken = errors.New("store: closed")
	if err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Damage is what replay could not read: regions of damaged bytes skipped.
type Damage struct {
	Regions int
	Bytes   int64
}

// Damage reports what Open skipped.
func (s *Store) Damage() Damage { return s.damage }
