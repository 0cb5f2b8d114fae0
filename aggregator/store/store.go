// Package store is the aggregator's embedded on-disk store: an append-only
// log of accepted batches in time-bounded segment files. A record is
// durable (fsynced) before Append returns, which is what lets the
// aggregator acknowledge a batch; concurrent appends share one fsync.
// Retention deletes whole segments; MaxBytes bounds them all together.
// Opening reads only the last segment
// (to cut a torn tail); readers scan from a position or a time, one
// segment in memory at a time.
package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"perigee/files"
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

// Options tune segment rotation and bound the store.
type Options struct {
	SegmentBytes int64         // rotate past this size; default 64 MiB
	SegmentAge   time.Duration // rotate when the segment is this old; default 1h
	// MaxBytes bounds the segment files' sizes together: an append that
	// would pass it fails with ErrFull. Zero is no bound.
	MaxBytes int64
	// MaxRecord bounds one record, at most (and by default) the MaxRecord
	// constant. A segment is at most SegmentBytes and one record, so that
	// is how much of a segment file is ever read: a larger one was not
	// written by the store (or with larger options), and is refused.
	MaxRecord int64
}

// ErrFull is an append refused because the store holds Options.MaxBytes:
// it is refused whole, and nothing stored is removed to make room.
var ErrFull = errors.New("store: full")

type segment struct {
	id     uint64
	newest time.Time // latest record time, for retention and time scans
	size   int64     // bytes, once sealed; the current segment's is curSize
}

// Pos is a place in the log: a segment and a byte offset in it.
type Pos struct {
	Seg uint64
	Off int64
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
	segs     []segment     // ascending id; the last is cur
	bytes    int64         // all segments' sizes, cur's included
	gen      uint64        // records written
	broken   error         // a write could not be undone: refuse further appends
	damaged  map[Pos]int64 // damaged regions scans found, by start

	syncMu  sync.Mutex
	durable atomic.Uint64 // records known to be on stable storage
}

// Open lists the segments in dir, checks the last one (the only one a
// crash can have torn), and starts a new segment for appends. Sealed
// segments are not read: their newest record time is their modification
// time, the time of their last append.
func Open(dir string, opts Options, log *slog.Logger) (*Store, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 64 << 20
	}
	if opts.SegmentAge <= 0 {
		opts.SegmentAge = time.Hour
	}
	if opts.MaxRecord <= 0 || opts.MaxRecord > MaxRecord {
		opts.MaxRecord = MaxRecord
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	ids, err := segmentIDs(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, opts: opts, log: log, damaged: map[Pos]int64{}}
	for i, id := range ids {
		info, err := os.Stat(s.path(id))
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		seg := segment{id: id, newest: info.ModTime(), size: info.Size()}
		if i == len(ids)-1 {
			if seg.newest, err = s.scanSegment(id, 0, -1, true, nil); err != nil {
				return nil, err
			}
			if info, err = os.Stat(s.path(id)); err != nil { // a torn tail cut
				return nil, fmt.Errorf("store: %w", err)
			}
			seg.size = info.Size()
		}
		s.segs = append(s.segs, seg)
		s.bytes += seg.size
	}
	if err := s.rotate(time.Now()); err != nil {
		return nil, err
	}
	return s, nil
}

// ScanFunc receives one intact record and the position after it.
type ScanFunc func(at time.Time, rec []byte, next Pos) error

// Scan hands fn every intact record from pos to the end of what has been
// written when it starts, in order. A position in a segment since pruned
// starts at the oldest segment left.
func (s *Store) Scan(from Pos, fn ScanFunc) error {
	if from.Off < 0 {
		return fmt.Errorf("store: position %d:%d is before its segment", from.Seg, from.Off)
	}
	segs, curSize := s.snapshot()
	for i, seg := range segs {
		if seg.id < from.Seg {
			continue
		}
		off, limit := int64(0), int64(-1)
		if seg.id == from.Seg {
			off = from.Off
		}
		if i == len(segs)-1 {
			limit = curSize
		}
		if _, err := s.scanSegment(seg.id, off, limit, false, fn); err != nil {
			return err
		}
	}
	return nil
}

// ScanSince is Scan from the oldest segment that may hold a record at or
// after t.
func (s *Store) ScanSince(t time.Time, fn ScanFunc) error {
	segs, _ := s.snapshot()
	for _, seg := range segs {
		if !seg.newest.Before(t) {
			return s.Scan(Pos{Seg: seg.id}, fn)
		}
	}
	return nil
}

// SegmentInfo is one segment: its id and the time of its newest record.
type SegmentInfo struct {
	ID     uint64
	Newest time.Time
}

// Segments lists the segments, oldest first; the last is the one being
// written.
func (s *Store) Segments() []SegmentInfo {
	segs, _ := s.snapshot()
	out := make([]SegmentInfo, len(segs))
	for i, seg := range segs {
		out[i] = SegmentInfo{ID: seg.id, Newest: seg.newest}
	}
	return out
}

// ScanSegment hands fn every intact record of segment id, up to what has
// been written when it starts. A segment that is gone holds nothing.
func (s *Store) ScanSegment(id uint64, fn ScanFunc) error {
	segs, curSize := s.snapshot()
	for i, seg := range segs {
		if seg.id == id {
			limit := int64(-1)
			if i == len(segs)-1 {
				limit = curSize
			}
			_, err := s.scanSegment(id, 0, limit, false, fn)
			return err
		}
	}
	return nil
}

// End is the position after the last record written.
func (s *Store) End() Pos {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Pos{Seg: s.segs[len(s.segs)-1].id, Off: s.curSize}
}

func (s *Store) snapshot() ([]segment, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.segs), s.curSize
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

// scanSegment reads one segment from off (up to limit bytes of it when
// limit ≥ 0), handing each intact record to fn, and returns the newest
// record time. Damaged bytes cost only the records they hit: the scan skips
// to the next record whose magic and checksum hold, and counts and logs
// what it skipped, once per region. The one thing ever cut (when last is
// set, at Open) is a record left incomplete at the very end of the last
// segment by a crash during its write, which was therefore never
// acknowledged. A segment pruned under the scan is skipped.
func (s *Store) scanSegment(id uint64, off, limit int64, last bool, fn ScanFunc) (time.Time, error) {
	path := s.path(id)
	b, v1, err := s.readSegment(path, off, limit)
	if errors.Is(err, os.ErrNotExist) && !last {
		return time.Time{}, nil
	}
	var tooLarge *files.TooLargeError
	if errors.As(err, &tooLarge) {
		return time.Time{}, fmt.Errorf("store: %w, more than a segment of %d bytes and a record of %d can be: not a segment this store wrote",
			err, s.opts.SegmentBytes, s.opts.MaxRecord)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("store: %w", err)
	}
	decode := decodeRecord
	if v1 {
		decode = decodeV1Record
	}
	// b holds the segment from off: i is where in b, off+i in the file.
	var newest time.Time
	for i := 0; i < len(b); {
		at, rec, n, ok := decode(b[i:])
		if !ok {
			next := resync(b, i, v1)
			if next == len(b) && last && !v1 && incomplete(b[i:]) {
				s.log.Warn("store: cutting a record torn by a crash", "segment", path, "offset", off+int64(i), "bytes", len(b)-i)
				if err := os.Truncate(path, off+int64(i)); err != nil {
					return time.Time{}, fmt.Errorf("store: truncate %s: %w", path, err)
				}
				break
			}
			s.noteDamage(Pos{Seg: id, Off: off + int64(i)}, int64(next-i))
			i = next
			continue
		}
		i += n
		if fn != nil {
			if err := fn(at, rec, Pos{Seg: id, Off: off + int64(i)}); err != nil {
				return time.Time{}, err
			}
		}
		if at.After(newest) {
			newest = at
		}
	}
	return newest, nil
}

// readSegment reads the segment at path from off, up to limit bytes of it
// when limit ≥ 0, and says whether it is of version 1 (no magic at its
// start). A scan resuming near the end reads what follows its position:
// the exporter's, every second, once read the whole segment being
// written to find nothing after the end.
func (s *Store) readSegment(path string, off, limit int64) ([]byte, bool, error) {
	f, st, err := files.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	if st.Size() > s.maxSegment() {
		return nil, false, &files.TooLargeError{Path: path, Limit: s.maxSegment()}
	}
	end := st.Size()
	if limit >= 0 {
		end = min(end, limit)
	}
	head := make([]byte, min(end, int64(len(recMagic))))
	b := make([]byte, max(0, end-off))
	// A file shorter than it was at Stat (cut under the scan) ends early.
	n, err := f.ReadAt(head, 0)
	if err == nil || errors.Is(err, io.EOF) {
		head = head[:n]
		n, err = f.ReadAt(b, off)
		b = b[:n]
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return b, len(head) > 0 && !bytes.HasPrefix(head, []byte(recMagic)), err
}

func (s *Store) noteDamage(at Pos, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, seen := s.damaged[at]; seen {
		return
	}
	s.damaged[at] = n
	s.log.Error("store: damaged bytes skipped, file kept", "segment", s.path(at.Seg), "offset", at.Off, "bytes", n)
}

// maxSegment is the largest segment file the store writes: rotation
// happens before an append that finds the segment full, so at most one
// record passes SegmentBytes.
func (s *Store) maxSegment() int64 {
	return s.opts.SegmentBytes + headerLen + s.opts.MaxRecord
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
		s.segs[len(s.segs)-1].size = s.curSize
	}
	var id uint64 = 1
	if n := len(s.segs); n > 0 {
		id = s.segs[n-1].id + 1
	}
	f, err := os.OpenFile(s.path(id), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("store: new segment: %w", err)
	}
	if err := files.SyncDir(s.dir); err != nil {
		f.Close()
		return fmt.Errorf("store: sync dir: %w", err)
	}
	s.cur, s.curSize, s.curStart = f, 0, now
	s.segs = append(s.segs, segment{id: id})
	return nil
}

// Append stores rec with its time and returns once it is on stable storage,
// with the id of the segment it went to.
func (s *Store) Append(at time.Time, rec []byte) (uint64, error) {
	if int64(len(rec)) > s.opts.MaxRecord {
		return 0, fmt.Errorf("store: record of %d bytes over the %d limit", len(rec), s.opts.MaxRecord)
	}
	buf := appendRecord(make([]byte, 0, headerLen+len(rec)), at, rec)
	s.mu.Lock()
	if s.broken != nil {
		s.mu.Unlock()
		return 0, s.broken
	}
	// Rotated before the bound is checked: a full store still seals the
	// segment being written when it is due, which only retention can
	// then remove (it never removes the segment being written).
	if s.curSize >= s.opts.SegmentBytes || at.Sub(s.curStart) >= s.opts.SegmentAge {
		if err := s.rotate(at); err != nil {
			s.broken = err
			s.mu.Unlock()
			return 0, err
		}
	}
	if s.opts.MaxBytes > 0 && s.bytes+int64(len(buf)) > s.opts.MaxBytes {
		s.mu.Unlock()
		return 0, fmt.Errorf("%w: %d bytes held, a record of %d would pass the bound of %d", ErrFull, s.bytes, len(buf), s.opts.MaxBytes)
	}
	if _, err := s.cur.Write(buf); err != nil {
		// Undo a partial write, or replay would stop at it and lose
		// every later record.
		if terr := s.cur.Truncate(s.curSize); terr != nil {
			s.broken = fmt.Errorf("store: write failed and could not be undone: %w", errors.Join(err, terr))
		}
		s.mu.Unlock()
		return 0, fmt.Errorf("store: write: %w", err)
	}
	s.curSize += int64(len(buf))
	s.bytes += int64(len(buf))
	s.gen++
	gen := s.gen
	seg := &s.segs[len(s.segs)-1]
	if at.After(seg.newest) {
		seg.newest = at
	}
	id := seg.id
	s.mu.Unlock()
	return id, s.syncTo(gen)
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
			s.bytes -= seg.size
			continue
		}
		keep = append(keep, seg)
	}
	s.segs = keep
	return removed, nil
}

// FreedAt is the earliest time retention can remove a segment, and so
// make room: when the newest record of the oldest segment that holds one
// is older than retention, and for the segment being written not before it
// is rotated by age. Zero for a store that holds no record.
func (s *Store) FreedAt(retention time.Duration) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, seg := range s.segs {
		if seg.newest.IsZero() {
			continue
		}
		at := seg.newest.Add(retention)
		if i == len(s.segs)-1 {
			at = later(at, s.curStart.Add(s.opts.SegmentAge))
		}
		return at
	}
	return time.Time{}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Bytes is the size of all segment files together.
func (s *Store) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
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

// Damage is what scans could not read: regions of damaged bytes skipped.
type Damage struct {
	Regions int
	Bytes   int64
}

// Damage reports the damaged regions scans have skipped so far.
func (s *Store) Damage() Damage {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := Damage{Regions: len(s.damaged)}
	for _, n := range s.damaged {
		d.Bytes += n
	}
	return d
}
