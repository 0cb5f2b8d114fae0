// Package files reads what operators and earlier runs leave on disk
// (keyrings, policies, databases, spooled batches, stored segments) within
// bounds, and writes the program's own state so that a crash leaves the old
// version or the new one, never a mix. A path that names no regular file is
// refused before any read: a FIFO would block the open or the read for good,
// and a device such as /dev/zero would never end it. So is a file over the
// caller's limit, by its size before any read.
package files

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// NoLimit is the limit of a file whose size is bounded by what wrote it.
const NoLimit = math.MaxInt64

// TooLargeError is a file over the limit its reader set.
type TooLargeError struct {
	Path  string
	Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s: over %d bytes", e.Path, e.Limit)
}

// Read reads the regular file at path, or the one a symlink there names,
// if it holds at most limit bytes.
func Read(path string, limit int64) ([]byte, error) { return read(path, limit, 0) }

// MaxTokenBytes bounds a token file: far more than any bearer token.
const MaxTokenBytes = 64 << 10

// ReadToken reads a secret (a bearer token) from path, within
// MaxTokenBytes: the file's content without surrounding white space, which
// must not be empty (an *EmptyError).
func ReadToken(path string) (string, error) {
	b, err := Read(path, MaxTokenBytes)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", &EmptyError{Path: path}
	}
	return tok, nil
}

// EmptyError is a token file that holds nothing but white space.
type EmptyError struct{ Path string }

func (e *EmptyError) Error() string { return e.Path + " is empty" }

// ReadOwn reads a file this program wrote under its own name: a symlink
// found there is refused, not followed, as it may point anywhere.
func ReadOwn(path string, limit int64) ([]byte, error) {
	return read(path, limit, syscall.O_NOFOLLOW)
}

// OpenOwn opens for reading a regular file this program wrote under its
// own name, for a caller that streams it; like ReadOwn it refuses a
// symlink, and what is no regular file.
func OpenOwn(path string) (*os.File, error) {
	f, _, err := open(path, syscall.O_NOFOLLOW)
	return f, err
}

// Open opens the regular file at path, or the one a symlink there names,
// for a caller that reads part of it, and says what it opened; what is no
// regular file is refused, without blocking.
func Open(path string) (*os.File, os.FileInfo, error) { return open(path, 0) }

// Check reports why path, or what a symlink there names, is no regular
// file this process may read; nil if it is one. It reads nothing.
func Check(path string) error {
	f, _, err := open(path, 0)
	if err == nil {
		f.Close()
	}
	return err
}

// open opens a regular file for reading, without blocking, so that a FIFO
// is found by its mode rather than waited on, and says what it opened.
func open(path string, flags int) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|flags, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file (%s)", path, st.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, st, nil
}

func read(path string, limit int64, flags int) ([]byte, error) {
	f, st, err := open(path, flags)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Refused by its size, not read up to the limit first; the limited
	// read still catches a file that grows while it is read.
	if st.Size() > limit {
		return nil, &TooLargeError{Path: path, Limit: limit}
	}
	r := io.Reader(f)
	if limit < NoLimit {
		r = io.LimitReader(f, limit+1)
	}
	b, err := io.ReadAll(r)
	if err == nil && int64(len(b)) > limit {
		return nil, &TooLargeError{Path: path, Limit: limit}
	}
	return b, err
}

// WriteAtomic replaces the file at path with b, and returns once file and
// directory are on stable storage, with what the new file is. It writes a
// new file beside it (path + ".tmp"), syncs it, renames it over path and
// syncs the directory, so that a crash at any point leaves path as it was
// or as b, and a rename the directory had not yet recorded cannot bring
// the old version back after it was reported written. Whatever was at the
// temporary name is removed first, not written through: a symlink planted
// there would have the write land where it points. On an error path is
// unchanged and the temporary file gone.
func WriteAtomic(path string, b []byte) (os.FileInfo, error) {
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	var info os.FileInfo
	if err == nil {
		info, err = f.Stat()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return nil, err
	}
	return info, SyncDir(filepath.Dir(path))
}

// SyncDir puts dir's entries (a file made, renamed or removed in it) on
// stable storage.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
