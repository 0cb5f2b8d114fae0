//go:build unix

package h1client

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// alive reports whether an idle connection may carry a request: nothing
// has arrived on it since its last response, neither a byte (an answer
// nobody asked for, which would become the next request's response), nor
// the peer's FIN or RST. It costs one non-blocking read and no goroutine.
func (c *conn) alive() bool {
	if c.raw == nil {
		return true // not a socket: nothing to look into
	}
	err := c.raw.Read(c.probeFn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The last exchange's read deadline, left set (see conn.Read),
		// has passed: a probe must not wait, so it needs none.
		c.setRead(time.Time{})
		err = c.raw.Read(c.probeFn)
	}
	if err != nil {
		return false
	}
	// Only a read that would block means silence: a byte read (no error),
	// EOF (no error either) and ECONNRESET all end the connection.
	return errors.Is(c.probeErr, syscall.EAGAIN)
}

// probe is the read alive makes; a method value kept in c, so that a
// check allocates nothing.
func (c *conn) probe(fd uintptr) bool {
	_, c.probeErr = syscall.Read(int(fd), c.probeBuf[:])
	return true // never wait for readability
}
