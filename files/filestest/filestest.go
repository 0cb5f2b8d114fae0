// Package filestest plants, for tests, what a program may find on disk
// where it expects a regular file, and checks that such a path is refused
// in time: a FIFO opened for reading waits for a writer for good, and a
// device such as /dev/zero never ends.
package filestest

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bound is longer than any read of a small regular file takes on a loaded
// machine, under the race detector, and shorter than a test's patience.
const bound = 20 * time.Second

// FIFO makes a FIFO at path and returns path.
func FIFO(t testing.TB, path string) string {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Sparse makes a file of size bytes at path that takes no disk, and
// returns path.
func Sparse(t testing.TB, path string, size int64) string {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

// Within returns what fn returns, and fails t if fn has not returned
// within the bound.
func Within(t testing.TB, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(bound):
		t.Fatalf("%s did not return within %v", what, bound)
		return nil
	}
}

// Refused checks that fn returns within the bound an error that says each
// of want.
func Refused(t testing.TB, what string, fn func() error, want ...string) {
	t.Helper()
	err := Within(t, what, fn)
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("%s: %v, want an error that says %q", what, err, w)
			return
		}
	}
}
