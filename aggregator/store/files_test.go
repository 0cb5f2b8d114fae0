package store

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"perigee/files/filestest"
	"perigee/memtest"
)

// A segment name that is no regular file (a FIFO, or a symlink to a
// device) is refused with an error that names it, at once: os.ReadFile
// held Open in a FIFO for good, and read /dev/zero until memory ran out.
// A symlink to a regular file is still read.
func TestSegmentThatIsNoRegularFileIsRefused(t *testing.T) {
	for name, plant := range map[string]func(path string) error{
		"fifo":                func(p string) error { return syscall.Mkfifo(p, 0o600) },
		"symlink to a device": func(p string) error { return os.Symlink("/dev/zero", p) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Append(time.Now(), []byte("intact")); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if err := plant(s.path(99)); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := Open(dir, Options{}, slog.New(slog.DiscardHandler))
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "seg-0000000099.log") || !strings.Contains(err.Error(), "not a regular file") {
					t.Fatalf("Open: %v, want a refusal naming the segment", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Open did not return")
			}
		})
	}
}

// A segment larger than any the store writes (tampered with, or another
// program's) is refused by its size with an error naming it, before any
// of it is read: the whole of it was read into memory, a sparse file of
// 256 MiB took 256 MiB of heap. Both as the last segment, read at Open,
// and as a sealed one, read by a scan.
func TestOversizedSegmentIsRefusedUnread(t *testing.T) {
	opts := Options{SegmentBytes: 1 << 20, MaxRecord: 64 << 10}
	for name, last := range map[string]bool{"last, at Open": true, "sealed, by a scan": false} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, opts, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Append(time.Now(), []byte("intact")); err != nil {
				t.Fatal(err)
			}
			s.Close()
			huge := s.path(1)
			if last {
				huge = s.path(99)
			}
			filestest.Sparse(t, huge, 256<<20)
			var err2 error
			grew := memtest.PeakGrowthDuring(func() {
				s, err2 = Open(dir, opts, slog.New(slog.DiscardHandler))
				if err2 == nil {
					defer s.Close()
					err2 = s.Scan(Pos{}, func(time.Time, []byte, Pos) error { return nil })
				}
			})
			t.Logf("the heap peaked %.1f MiB higher", float64(grew)/(1<<20))
			if err2 == nil || !strings.Contains(err2.Error(), filepath.Base(huge)) || !strings.Contains(err2.Error(), "over") {
				t.Fatalf("got %v, want a refusal naming %s", err2, huge)
			}
			if grew > 16<<20 {
				t.Fatalf("the heap grew %d MiB reading a 256 MiB segment", grew>>20)
			}
		})
	}
}
