package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

func collect(t *testing.T, dir string, opts Options) (*Store, []string) {
	t.Helper()
	var got []string
	s, err := Open(dir, opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Scan(Pos{}, func(_ time.Time, rec []byte, _ Pos) error {
		got = append(got, string(rec))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return s, got
}

func TestConcurrentAppendsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s, got := collect(t, dir, Options{SegmentBytes: 4 << 10})
	if len(got) != 0 {
		t.Fatalf("fresh store replayed %d records", len(got))
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				if _, err := s.Append(time.Now(), fmt.Appendf(nil, "w%d-%d", w, i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, got = collect(t, dir, Options{})
	seen := map[string]bool{}
	for _, r := range got {
		if seen[r] {
			t.Fatalf("record %s replayed twice", r)
		}
		seen[r] = true
	}
	if len(seen) != 800 {
		t.Fatalf("replayed %d distinct records, want 800", len(seen))
	}
	if segs, _ := segmentIDs(dir); len(segs) < 3 {
		t.Fatalf("want several segments at 4 KiB each, got %d", len(segs))
	}
}

// A crash in the middle of a write leaves a partial record at the end of
// the last segment: replay keeps everything before it, cuts it off, and the
// store goes on appending after it.
func TestTornTailIsCutAndAppendsContinue(t *testing.T) {
	dir := t.TempDir()
	s, _ := collect(t, dir, Options{})
	for i := range 3 {
		if _, err := s.Append(time.Now(), fmt.Appendf(nil, "r%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	ids, _ := segmentIDs(dir)
	path := filepath.Join(dir, fmt.Sprintf("seg-%010d.log", ids[len(ids)-1]))
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := appendRecord(nil, time.Now(), []byte("never acknowledged"))
	f.Write(torn[:len(torn)-5])
	f.Close()

	s, got := collect(t, dir, Options{})
	if fmt.Sprint(got) != "[r0 r1 r2]" {
		t.Fatalf("after torn write got %v", got)
	}
	if _, err := s.Append(time.Now(), []byte("r3")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, got = collect(t, dir, Options{}); fmt.Sprint(got) != "[r0 r1 r2 r3]" {
		t.Fatalf("after reopen got %v", got)
	}
}

// One damaged byte inside a sealed segment, and one inside the last, cost
// the two records they hit and nothing else: replay resynchronises on the
// next intact record, counts what it skipped, and leaves the files as they
// were (issue 14: 4,035 batches became 2,206).
func TestDamageSkipsOnlyTheDamagedRecords(t *testing.T) {
	dir := t.TempDir()
	s, _ := collect(t, dir, Options{SegmentBytes: 4 << 10})
	const n = 600
	for i := range n {
		if _, err := s.Append(time.Now(), fmt.Appendf(nil, "record-%04d", i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	ids, _ := segmentIDs(dir)
	if len(ids) < 4 {
		t.Fatalf("want several segments, got %d", len(ids))
	}
	sizes := map[string]int64{}
	for _, id := range []uint64{ids[1], ids[len(ids)-1]} {
		path := filepath.Join(dir, fmt.Sprintf("seg-%010d.log", id))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x40
		if err := os.WriteFile(path, b, 0o640); err != nil {
			t.Fatal(err)
		}
		sizes[path] = int64(len(b))
	}
	s, got := collect(t, dir, Options{})
	if len(got) != n-2 {
		t.Fatalf("replayed %d records of %d, want all but the 2 damaged", len(got), n)
	}
	if d := s.Damage(); d.Regions != 2 || d.Bytes == 0 {
		t.Fatalf("damage reported %+v, want 2 regions", d)
	}
	s.Close()
	for path, size := range sizes {
		if info, err := os.Stat(path); err != nil || info.Size() != size {
			t.Fatalf("%s: size %d, want %d untouched (%v)", path, info.Size(), size, err)
		}
	}
	// A second start finds the same, and loses nothing more.
	if _, again := collect(t, dir, Options{}); len(again) != n-2 {
		t.Fatalf("second replay: %d records", len(again))
	}
}

// A flipped bit in the last, complete record of the last segment loses that
// record only; the bytes stay, since the record was written whole.
func TestFlippedBitLosesOneRecord(t *testing.T) {
	dir := t.TempDir()
	s, _ := collect(t, dir, Options{})
	s.Append(time.Now(), []byte("good"))
	s.Append(time.Now(), []byte("bad"))
	s.Close()
	ids, _ := segmentIDs(dir)
	path := filepath.Join(dir, fmt.Sprintf("seg-%010d.log", ids[0]))
	b, _ := os.ReadFile(path)
	b[len(b)-1] ^= 1
	os.WriteFile(path, b, 0o640)
	if _, got := collect(t, dir, Options{}); fmt.Sprint(got) != "[good]" {
		t.Fatalf("got %v", got)
	}
	if info, _ := os.Stat(path); info.Size() != int64(len(b)) {
		t.Fatalf("segment cut to %d bytes", info.Size())
	}
}

func TestPruneDropsOldSegmentsOnly(t *testing.T) {
	dir := t.TempDir()
	s, _ := collect(t, dir, Options{SegmentAge: time.Hour})
	old := time.Now().Add(-48 * time.Hour)
	// Record times drive rotation, so each of these lands in a new segment.
	s.curStart = old
	s.Append(old, []byte("old"))
	s.Append(time.Now(), []byte("new"))
	n, err := s.Prune(time.Now().Add(-24 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("nothing pruned")
	}
	s.Close()
	if _, got := collect(t, dir, Options{}); fmt.Sprint(got) != "[new]" {
		t.Fatalf("after prune got %v", got)
	}
}

// Segments written before records had a magic still replay; damage in one
// skips the rest of it (there is nothing to resynchronise on) and never
// cuts it.
func TestVersion1SegmentStillReplays(t *testing.T) {
	dir := t.TempDir()
	var b []byte
	for _, r := range []string{"a", "b", "c"} {
		start := len(b)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r)))
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint64(b, uint64(time.Now().UnixNano()))
		b = append(b, r...)
		binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+8:], castagnoli))
	}
	path := filepath.Join(dir, fmt.Sprintf("seg-%010d.log", 1))
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
	s, got := collect(t, dir, Options{})
	s.Close()
	if fmt.Sprint(got) != "[a b c]" {
		t.Fatalf("version 1 segment replayed %v", got)
	}
	b[len(b)-len("c")-v1HeaderLen-1] ^= 1 // inside "b"
	os.WriteFile(path, b, 0o640)
	s, got = collect(t, dir, Options{})
	s.Close()
	if fmt.Sprint(got) != "[a]" || s.Damage().Regions != 1 {
		t.Fatalf("damaged version 1 segment replayed %v, damage %+v", got, s.Damage())
	}
	if info, _ := os.Stat(path); info.Size() != int64(len(b)) {
		t.Fatalf("version 1 segment cut to %d bytes", info.Size())
	}
}

// A scan from a position another scan handed out resumes exactly after
// that record, across segments; ScanSince starts at the segment that may
// hold the time.
func TestScanResumesFromPosition(t *testing.T) {
	dir := t.TempDir()
	s, _ := collect(t, dir, Options{SegmentBytes: 1 << 10})
	for i := range 200 {
		if _, err := s.Append(time.Now(), fmt.Appendf(nil, "r%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var mid Pos
	n := 0
	s.Scan(Pos{}, func(_ time.Time, _ []byte, next Pos) error {
		if n++; n == 120 {
			mid = next
		}
		return nil
	})
	var rest []string
	s.Scan(mid, func(_ time.Time, rec []byte, _ Pos) error {
		rest = append(rest, string(rec))
		return nil
	})
	if len(rest) != 80 || rest[0] != "r120" || rest[79] != "r199" {
		t.Fatalf("resumed scan: %d records, %v...", len(rest), rest[:min(3, len(rest))])
	}
	var since int
	s.ScanSince(time.Now().Add(time.Hour), func(time.Time, []byte, Pos) error { since++; return nil })
	if since != 0 {
		t.Fatalf("scan since the future found %d records", since)
	}
	s.Close()
}

// dirBytes is the sum of the sizes of the files in dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += info.Size()
	}
	return n
}

// MaxBytes holds the files' sizes together: an append past it is refused
// with ErrFull and stores nothing, and retention makes the room again.
func TestMaxBytesBoundsTheFilesAndPruneFreesRoom(t *testing.T) {
	dir := t.TempDir()
	const bound = 10 * (headerLen + 100)
	s, _ := collect(t, dir, Options{SegmentAge: time.Hour, MaxBytes: bound})
	old := time.Now().Add(-48 * time.Hour)
	s.curStart = old
	rec := make([]byte, 100)
	for i := range 10 {
		at := old
		if i >= 5 {
			at = time.Now() // a new segment: the first five may be pruned
		}
		if _, err := s.Append(at, rec); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if _, err := s.Append(time.Now(), rec); !errors.Is(err, ErrFull) {
		t.Fatalf("append past the bound: %v", err)
	}
	if got := dirBytes(t, dir); got != bound || s.Bytes() != bound {
		t.Fatalf("files hold %d bytes, Bytes says %d, bound %d", got, s.Bytes(), bound)
	}
	if _, err := s.Prune(time.Now().Add(-24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(time.Now(), rec); err != nil {
		t.Fatalf("append after prune: %v", err)
	}
	s.Close()
	s, got := collect(t, dir, Options{MaxBytes: bound})
	defer s.Close()
	if len(got) != 6 || s.Bytes() != dirBytes(t, dir) {
		t.Fatalf("reopened: %d records, Bytes %d, files %d", len(got), s.Bytes(), dirBytes(t, dir))
	}
}

// A store filled within the segment being written still rotates it when
// it is due by age, so that retention can remove it: the bound was checked
// before the rotation, so a full store never rotated again, retention
// (which keeps the segment being written) never freed anything, and every
// append was refused until a restart.
func TestFullStoreInOneSegmentStillRotatesAndIsFreed(t *testing.T) {
	dir := t.TempDir()
	const bound = 10 * (headerLen + 100)
	s, _ := collect(t, dir, Options{SegmentAge: time.Hour, MaxBytes: bound})
	defer s.Close()
	start := time.Now()
	rec := make([]byte, 100)
	for i := range 10 {
		if _, err := s.Append(start, rec); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	later := start.Add(2 * time.Hour) // the segment is due to rotate, its records past a retention of an hour
	if _, err := s.Append(later, rec); !errors.Is(err, ErrFull) {
		t.Fatalf("append past the bound: %v", err)
	}
	if n, err := s.Prune(later.Add(-time.Hour)); err != nil || n != 1 {
		t.Fatalf("pruned %d segments (%v), want the full one", n, err)
	}
	if _, err := s.Append(later, rec); err != nil {
		t.Fatalf("append after retention: %v", err)
	}
}

// A position before its segment's start (an offset read from a damaged
// file as negative) is an error, not a slice before the segment's bytes:
// that panicked.
func TestScanFromANegativeOffsetIsAnError(t *testing.T) {
	s, _ := collect(t, t.TempDir(), Options{})
	defer s.Close()
	if _, err := s.Append(time.Now(), []byte("intact")); err != nil {
		t.Fatal(err)
	}
	if err := s.Scan(Pos{Seg: 1, Off: -1 << 63}, func(time.Time, []byte, Pos) error { return nil }); err == nil {
		t.Fatal("a scan from a negative offset: no error")
	}
}

// The exporter scans from its cursor every second, and a cursor that has
// caught up is at the end of the segment being written: each scan read
// the whole segment (up to 64 MiB) to find nothing after it, 64 MiB
// allocated a second while the export had nothing to do, and a backlog
// re-read it for each round of 500 batches. A scan reads from its
// position now.
func TestScanReadsFromItsPosition(t *testing.T) {
	dir := t.TempDir()
	s, _ := collect(t, dir, Options{})
	defer s.Close()
	rec := make([]byte, 64<<10)
	for range 256 { // 16 MiB
		if _, err := s.Append(time.Now(), rec); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(time.Now(), []byte("last")); err != nil {
		t.Fatal(err)
	}
	end := s.End()
	last := Pos{Seg: end.Seg, Off: end.Off - int64(len(appendRecord(nil, time.Time{}, []byte("last"))))}
	var got []string
	alloc := allocatedDuring(func() {
		if err := s.Scan(last, func(_ time.Time, rec []byte, _ Pos) error { got = append(got, string(rec)); return nil }); err != nil {
			t.Fatal(err)
		}
		if err := s.Scan(end, func(time.Time, []byte, Pos) error { t.Fatal("a record after the end"); return nil }); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("two scans near the end of a 16 MiB segment allocated %d KiB", alloc>>10)
	if len(got) != 1 || got[0] != "last" {
		t.Fatalf("scan from the last record: %q", got)
	}
	if alloc > 1<<20 {
		t.Fatalf("two scans near the end of a 16 MiB segment allocated %d KiB", alloc>>10)
	}
}

// allocatedDuring is the bytes the heap allocated while f ran.
func allocatedDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
