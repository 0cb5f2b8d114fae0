package store

import (
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
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
