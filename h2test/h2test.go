// Package h2test is a raw HTTP/2 client for tests that misbehave on
// purpose: it writes the frames a test chooses (x/net/http2's Framer),
// where net/http's client would write only well-behaved ones.
package h2test

import (
	"bytes"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Conn is one HTTP/2 connection over TLS.
type Conn struct {
	*http2.Framer
	TLS *tls.Conn
	enc *hpack.Encoder
	buf bytes.Buffer // enc's output
}

// Dial opens a TLS connection to addr offering only h2, trusting any
// certificate, and sends the preface and a SETTINGS frame of settings; it
// is closed when t ends.
func Dial(t testing.TB, addr string, settings ...http2.Setting) *Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN: %q, want h2", p)
	}
	h := &Conn{Framer: http2.NewFramer(c, c), TLS: c}
	h.enc = hpack.NewEncoder(&h.buf)
	h.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := h.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return h
}

// Block is the HPACK block of a GET of https://authority/path with extra
// header fields, name then value, through the connection's encoder (so
// its dynamic table is the one the server's decoder mirrors).
func (h *Conn) Block(authority, path string, extra ...string) []byte {
	h.buf.Reset()
	fields := append([]string{":method", "GET", ":scheme", "https", ":authority", authority, ":path", path}, extra...)
	for i := 0; i+1 < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(h.buf.Bytes())
}

// Get sends a GET of https://authority/path on stream id, its headers in
// one frame and the stream ended with them.
func (h *Conn) Get(id uint32, authority, path string, extra ...string) error {
	return h.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.Block(authority, path, extra...), EndStream: true, EndHeaders: true})
}

// ReadUntil reads frames, answering the server's SETTINGS, until done
// returns true for one, within timeout; it returns the error that ended
// the reading otherwise (the connection closed, the deadline passed).
func (h *Conn) ReadUntil(timeout time.Duration, done func(http2.Frame) bool) error {
	h.TLS.SetReadDeadline(time.Now().Add(timeout))
	defer h.TLS.SetReadDeadline(time.Time{})
	for {
		f, err := h.ReadFrame()
		if err != nil {
			return err
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			if err := h.WriteSettingsAck(); err != nil {
				return err
			}
		}
		if done(f) {
			return nil
		}
	}
}
