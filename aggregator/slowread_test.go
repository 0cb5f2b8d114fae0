package aggregator_test

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"perigee/aggregator"
	"perigee/h2test"
	"perigee/h3serve/h3test"
)

// The API takes no token, and a client that took none of an answer held
// its handler as long as it kept its connection: over HTTP/2 with a
// stream window of zero, 250 handlers a connection; over HTTP/3 with a
// window smaller than an answer's head. A response now has write (two
// minutes by default) to be written, after which its stream is reset.
func TestAggregatorClientThatNeverReadsIsCut(t *testing.T) {
	const write = time.Second
	const bound = 20 * write // room for a loaded machine
	a := startAggregator(t, func(c *aggregator.Config) {
		aggregator.SetListenerTimeouts(c, 10*time.Second, 2*time.Second)
		aggregator.SetWriteTimeout(c, write)
	})
	const path = "/app.js" // 12 KiB, more than any buffer on the way
	t.Run("HTTP/2", func(t *testing.T) {
		c := h2test.Dial(t, a.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		const streams = 10
		for i := range streams {
			if err := c.Get(uint32(2*i+1), "x", path); err != nil {
				t.Fatal(err)
			}
		}
		reset := 0
		err := c.ReadUntil(bound, func(f http2.Frame) bool {
			if _, ok := f.(*http2.RSTStreamFrame); ok {
				reset++
			}
			return reset == streams
		})
		if err != nil {
			t.Fatalf("%d of %d streams the client never read reset in %v: %v", reset, streams, bound, err)
		}
	})
	// A client that grants all the credit there is and stops reading its
	// connection stalls net/http's frame writer, behind which WriteTimeout's
	// stream resets queue: the connection goes once its writes have not
	// moved for the idle timeout (WriteByteTimeout).
	t.Run("HTTP/2, connection unread", func(t *testing.T) {
		open := func() string {
			return metricValue(a.metrics(t), `perigee_aggregator_connections_open{listener="https"}`)
		}
		before := open() // the client's own connection
		const maxWindow = 1<<31 - 1
		c := h2test.Dial(t, a.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: maxWindow})
		c.TLS.NetConn().(*net.TCPConn).SetReadBuffer(4 << 10)
		if err := c.WriteWindowUpdate(0, maxWindow-65535); err != nil {
			t.Fatal(err)
		}
		for i := range 1000 { // 12 MiB of answers, 250 at a time: more than the socket buffers hold
			if err := c.Get(uint32(2*i+1), "x", path); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		for open() != before {
			if time.Since(start) > bound {
				t.Fatalf("the connection is held %v after the client stopped reading it", bound)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Run("HTTP/3", func(t *testing.T) {
		h3test.NeverRead(t, a.addr, path, 10, bound)
	})
}

// A client that opens TCP and sends half a ClientHello, then nothing, is
// cut at the header deadline: the TLS handshake's deadline is net/http's
// least of ReadHeaderTimeout, ReadTimeout and WriteTimeout.
func TestAggregatorCutsAHalfHandshake(t *testing.T) {
	const readHeader = time.Second
	a := startAggregator(t, func(c *aggregator.Config) { aggregator.SetListenerTimeouts(c, readHeader, time.Minute) })
	conn, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")) // a ClientHello's first bytes
	const bound = 20 * readHeader                                      // room for a loaded machine
	conn.SetReadDeadline(time.Now().Add(bound))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("the half handshake is still open after %v: %v", bound, err)
	}
}
