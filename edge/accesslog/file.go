package accesslog

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
)

// File is an access log file that can be reopened at its path, so that
// logrotate can move it away and signal the node (SIGUSR1) to start a new
// one, without copying and truncating a file being written.
type File struct {
	path string
	f    atomic.Pointer[os.File]
}

// OpenFile opens path for appending, creating it (mode 0640) if needed.
func OpenFile(path string) (*File, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	lf := &File{path: path}
	lf.f.Store(f)
	return lf, nil
}

// open does not block: a FIFO opened for writing waits in open(2) until a
// reader comes, which could hold the node's start or a SIGUSR1 forever.
// O_NONBLOCK refuses a FIFO with no reader at once and changes nothing for
// a regular file; a FIFO with a reader is written through Go's poller, so
// closing it lets go of a write stuck on a reader that stopped.
func open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NONBLOCK, 0o640)
	if errors.Is(err, syscall.ENXIO) {
		return nil, fmt.Errorf("access log: %s is a FIFO with no reader", path)
	}
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return f, nil
}

// Write appends records; the JSON handler writes each in one call. It holds
// no lock, so a write stuck on a stalled reader holds up neither Reopen
// nor Close.
func (f *File) Write(p []byte) (int, error) {
	return f.f.Load().Write(p)
}

// Reopen starts writing to the file now at the path. If it cannot be
// opened, the log keeps going to the old file and the error says why.
func (f *File) Reopen() error {
	nf, err := open(f.path)
	if err != nil {
		return err
	}
	return f.f.Swap(nf).Close()
}

// Close closes the file.
func (f *File) Close() error {
	return f.f.Load().Close()
}
