package connlimit

import (
	"errors"
	"net"
)

// Listen bounds ln by l. A connection over a bound is accepted and reset
// at once, before anything is read from it (no TLS handshake): the
// backlog does not fill, the client learns at once, and the refusal
// leaves no TIME_WAIT behind. An accepted connection is counted until it
// is closed, by whoever holds it then: a TLS or HTTP server, or a handler
// that hijacked it.
func Listen(ln net.Listener, l *Limiter) net.Listener {
	return &listener{Listener: ln, limit: l}
}

type listener struct {
	net.Listener
	limit *Limiter
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, err := ln.limit.Acquire(c.RemoteAddr())
		if err != nil {
			if tc, ok := c.(interface{ SetLinger(int) error }); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
			continue
		}
		return &conn{Conn: c, release: release}, nil
	}
}

// conn gives its slot back when it is closed.
type conn struct {
	net.Conn
	release func() // once only, however often Close is called
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// NetConn is the connection underneath, as tls.Conn names its own: for
// what reads the socket's state (its TCP RTT).
func (c *conn) NetConn() net.Conn { return c.Conn }

// CloseWrite passes on a half-close, which a relayed (upgraded) connection
// may send.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
