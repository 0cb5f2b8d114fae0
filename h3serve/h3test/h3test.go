// Package h3test checks, from a client's side, what h3serve promises a
// server built on it: a request stream whose headers never finish is
// reset at the header deadline.
package h3test

import (
	"context"
	"errors"
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
