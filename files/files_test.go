package files

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"perigee/files/filestest"
	"perigee/memtest"
)

func TestReadRefusesWhatIsNoRegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filestest.FIFO(t, filepath.Join(dir, "fifo"))
	ok := filepath.Join(dir, "ok")
	if err := os.WriteFile(ok, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(ok, link); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path string
		read       func(string, int64) ([]byte, error)
		limit      int64
		want       string // in the error; "" reads "12345"
	}{
		{"a file within its limit", ok, Read, 5, ""},
		{"a file over its limit", ok, Read, 4, "over 4 bytes"},
		{"no limit", ok, Read, NoLimit, ""},
		{"a FIFO", fifo, Read, NoLimit, "not a regular file"},
		{"a device", "/dev/zero", Read, NoLimit, "not a regular file"},
		{"a directory", dir, Read, NoLimit, "not a regular file"},
		{"a symlink to a file", link, Read, 5, ""},
		{"a symlink where ours should be", link, ReadOwn, 5, "too many levels of symbolic links"},
		{"our own file", ok, ReadOwn, 5, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b []byte
			err := filestest.Within(t, "the read", func() (err error) { b, err = c.read(c.path, c.limit); return err })
			if c.want == "" {
				if err != nil || string(b) != "12345" {
					t.Fatalf("%q, %v", b, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
	if err := Check(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Check(FIFO) = %v", err)
	}
	if err := Check(link); err != nil {
		t.Fatalf("Check(symlink to a file) = %v", err)
	}
	var tooLarge *TooLargeError
	if _, err := Read(ok, 1); !errors.As(err, &tooLarge) || tooLarge.Limit != 1 {
		t.Fatalf("err = %v, want a TooLargeError", err)
	}
}

// A regular file says its size: one over the limit is refused by it, not
// read up to the limit first. A 2 GiB limit (the GeoIP database's) read
// 2 GiB of a bigger file into memory before refusing it, on every reload.
func TestFileOverItsLimitIsRefusedUnread(t *testing.T) {
	const limit = 64 << 20
	path := filestest.Sparse(t, filepath.Join(t.TempDir(), "huge"), 4*limit)
	var err error
	grew := memtest.PeakGrowthDuring(func() { _, err = Read(path, limit) })
	var tooLarge *TooLargeError
	if !errors.As(err, &tooLarge) {
		t.Fatalf("err = %v, want a TooLargeError", err)
	}
	t.Logf("heap grew %d KiB refusing a %d MiB file", grew>>10, 4*limit>>20)
	if grew > limit/8 {
		t.Errorf("refusing the file grew the heap by %d MiB: it was read up to the limit", grew>>20)
	}
}
