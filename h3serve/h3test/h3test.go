// Package h3test checks, from a client's side, what h3serve promises a
// server built on it: a request stream whose headers never finish is
// reset at the header deadline, and a connection over a connlimit bound is
// refused. Client and Dial are the client hosts those tests dial from;
// GetFrame is a request to write on a raw stream; Used0RTT tells whether
// a server takes 0-RTT data; NeverRead is a client that takes no answer.
package h3test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// StallHeaders opens a request stream on conn and sends a HEADERS frame
// announcing 100 bytes with 10 of them. It fails t unless the server
// resets the stream with H3_REQUEST_INCOMPLETE within five times
// readHeader, the server's deadline (room for a loaded machine).
func StallHeaders(t testing.TB, ctx context.Context, conn *quic.Conn, readHeader time.Duration) {
	t.Helper()
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Frame type 0x01 (HEADERS), length 100 as a two-byte varint.
	if _, err := str.Write(append([]byte{0x01, 0x40, 100}, make([]byte, 10)...)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	str.SetReadDeadline(start.Add(15 * readHeader))
	_, err = str.Read(make([]byte, 1))
	took := time.Since(start)
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != quic.StreamErrorCode(http3.ErrCodeRequestIncomplete) {
		t.Fatalf("after %v: %v, want the stream reset with H3_REQUEST_INCOMPLETE", took, err)
	}
	if took > 5*readHeader {
		t.Fatalf("a stalled header was reset after %v, the deadline is %v", took, readHeader)
	}
}

// Client is one client host on the loopback address from: a UDP socket
// that all its QUIC connections share, closed when t ends.
func Client(t testing.TB, from string) *quic.Transport {
	t.Helper()
	udp, err := net.ListenPacket("udp", from+":0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	t.Cleanup(func() { tr.Close(); udp.Close() })
	return tr
}

// Dial opens a QUIC connection to addr from tr's host, offering alpn and
// trusting any certificate, within 30 s.
func Dial(tr *quic.Transport, addr, alpn string, conf *quic.Config) (*quic.Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return tr.Dial(ctx, ua, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}}, conf)
}

// IsRefused reports whether err is the server's CONNECTION_REFUSED.
func IsRefused(err error) bool {
	var te *quic.TransportError
	return errors.As(err, &te) && te.ErrorCode == quic.ConnectionRefused && te.Remote
}

// GetFrame is the HEADERS frame of GET https://authority/path, for a
// client that writes it on a raw stream, to then read nothing of the
// answer, say. Its QPACK block refers only to the static table (RFC 9204,
// Appendix A), as quic-go's encoder does; authority and path are at most
// 126 bytes each.
func GetFrame(authority, path string) []byte {
	if len(authority) > 126 || len(path) > 126 {
		panic(fmt.Sprintf("h3test.GetFrame: %q or %q longer than 126 bytes", authority, path))
	}
	block := []byte{0, 0, 0xc0 | 17, 0xc0 | 23} // no dynamic table; :method GET, :scheme https
	// Literal values with the names of :authority (0) and :path (1).
	block = append(append(block, 0x50, byte(len(authority))), authority...)
	block = append(append(block, 0x51, byte(len(path))), path...)
	return append([]byte{0x01, 0x40 | byte(len(block)>>8), byte(len(block))}, block...) // HEADERS, two-byte length
}

// Used0RTT dials addr twice from tr's host: once to be given a session
// ticket, then again resuming with it and offering 0-RTT. It reports
// whether the server took 0-RTT data: requests in it could be replayed
// by anyone who captured them.
func Used0RTT(t testing.TB, tr *quic.Transport, addr string) bool {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cache := &ticketCache{ClientSessionCache: tls.NewLRUClientSessionCache(1), put: make(chan struct{}, 1)}
	conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}, ClientSessionCache: cache}
	first, err := tr.Dial(ctx, ua, conf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-cache.put:
	case <-ctx.Done():
		t.Fatal("no session ticket within 30s")
	}
	first.CloseWithError(0, "")
	early, err := tr.DialEarly(ctx, ua, conf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer early.CloseWithError(0, "")
	select {
	case <-early.HandshakeComplete():
	case <-ctx.Done():
		t.Fatal("the resumed handshake did not complete within 30s")
	}
	if !early.ConnectionState().TLS.DidResume {
		t.Fatal("the second connection did not resume the session")
	}
	return early.ConnectionState().Used0RTT
}

// ticketCache tells when a session ticket is stored.
type ticketCache struct {
	tls.ClientSessionCache
	put chan struct{}
}

func (c *ticketCache) Put(key string, cs *tls.ClientSessionState) {
	c.ClientSessionCache.Put(key, cs)
	if cs != nil {
		select {
		case c.put <- struct{}{}:
		default:
		}
	}
}

// NeverRead opens a connection to addr whose streams take no more than
// 100 bytes of any answer, sends GET path on streams of them, and reads
// none. It fails t unless the server closes the connection within bound
// (its write and idle timeouts, with room for a loaded machine), and
// returns how long that took.
func NeverRead(t testing.TB, addr, path string, streams int, bound time.Duration) time.Duration {
	t.Helper()
	conn, err := Dial(Client(t, "127.0.0.1"), addr, http3.NextProtoH3, &quic.Config{
		InitialStreamReceiveWindow: 100, MaxStreamReceiveWindow: 100,
		KeepAlivePeriod: 100 * time.Millisecond, MaxIdleTimeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	for range streams {
		str, err := conn.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		str.Write(GetFrame("x", path))
		str.Close() // and never read
	}
	start := time.Now()
	select {
	case <-conn.Context().Done():
	case <-time.After(bound):
		t.Fatalf("the connection is held %v after the client stopped reading its answers", bound)
	}
	var ae *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &ae) || !ae.Remote {
		t.Fatalf("the connection ended with %v, want the server to close it", err)
	}
	return time.Since(start)
}
