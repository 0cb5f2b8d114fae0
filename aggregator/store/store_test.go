package store

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func collect(t *testing.T, dir string, opts Options) (*Store, []string) {
	t.Helper()
	var got []string
	s, err := Open(dir, opts, slog.New(slog.DiscardHandler), func(_ time.Time, rec []byte) error {
		got = append(got, string(rec))
		return nil
	})
	if err != nil {
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
				if err := s.Append(time.Now(), fmt.Appendf(nil, "w%d-%d", w, i)); err != nil {
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
		if err := s.Append(time.Now(), fmt.Appendf(nil, "r%d", i)); err != nil {
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
	if err := s.Append(time.Now(), []byte("r3")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, got = collect(t, dir, Options{}); fmt.Sprint(got) != "[r0 r1 r2 r3]" {
		t.Fatalf("after reopen got %v", got)
	}
}

func TestFlippedBitEndsSegment(t *testing.T) {
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
