package edge

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"

	"perigee/h2test"
	"perigee/h3serve/h3test"
)

// A client that asks for a large response and never reads it holds, once
// the buffers between it and the node are full, the request's handler,
// its upstream connection and the backend's writer. Past timeouts.idle
// without taking a byte it is cut, over every protocol, and the backend
// is freed.
func TestClientThatNeverReadsIsCut(t *testing.T) {
	var started, finished atomic.Int32
	be := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		defer finished.Add(1)
		buf := make([]byte, 64<<10)
		for range 1024 { // 64 MiB: more than any window or buffer on the way
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	n := startNode(t, listenAny+`timeouts: {idle: 1s}
services:
  api: {backends: [{url: "`+be+`"}]}
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`)
	const bound = 20 * time.Second // 1s, with room for a loaded machine
	url := "https://" + n.Addrs().HTTPS + "/big"
	// check waits for the request started after `before` backend requests.
	check := func(t *testing.T, before int32) {
		t.Helper()
		want := before + 1
		waitFor(t, "the backend to start", func() bool { return started.Load() == want })
		start := time.Now()
		for finished.Load() < want {
			if time.Since(start) > bound {
				t.Fatalf("the backend is still held %v after the client stopped reading", bound)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("backend freed after %v", time.Since(start).Round(time.Millisecond))
	}
	t.Run("HTTP/1.1", func(t *testing.T) {
		raw, err := net.Dial("tcp", n.Addrs().HTTPS)
		if err != nil {
			t.Fatal(err)
		}
		raw.(*net.TCPConn).SetReadBuffer(4 << 10)
		c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		defer c.Close()
		before := started.Load()
		if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		check(t, before)
	})
	// The HTTP/3 client keeps its connection alive, as a hostile one
	// would: QUIC's idle timeout alone ends a silent one.
	h3 := &http3.Transport{TLSClientConfig: insecure(), QUICConfig: &quic.Config{KeepAlivePeriod: 100 * time.Millisecond}}
	defer h3.Close()
	for i, c := range []*http.Client{h2Client(), {Transport: h3}} {
		t.Run([]string{"HTTP/2", "HTTP/3"}[i], func(t *testing.T) {
			before := started.Load()
			resp, err := c.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			check(t, before)
		})
	}
}

// Small answers are written to an HTTP/1.1 connection after the handler
// has returned (net/http's buffers hold them until then). A client that
// sends request after request on one connection and reads none of the
// answers fills the buffers between it and the node at one such write:
// that too is cut after timeouts.idle, rather than holding the
// connection as long as the client keeps it open.
func TestPipeliningClientThatNeverReadsIsCut(t *testing.T) {
	// With its length declared (the proxy flushes answers of unknown
	// length at once), head and body stay in net/http's 4 KiB connection
	// buffer until the handler returns.
	small := make([]byte, 3500)
	n := startNode(t, listenAny+`timeouts: {idle: 1s}
services:
  api: {backends: [{url: "`+serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(small)))
		w.Write(small)
	}))+`"}]}
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`)
	raw, err := net.Dial("tcp", n.Addrs().HTTPS)
	if err != nil {
		t.Fatal(err)
	}
	raw.(*net.TCPConn).SetReadBuffer(4 << 10)
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	defer c.Close()
	cut := make(chan error, 1)
	go func() {
		for {
			if _, err := io.WriteString(c, "GET /small HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				cut <- err
				return
			}
		}
	}()
	const bound = 30 * time.Second // the buffers fill in a few, then 1s
	select {
	case err := <-cut:
		t.Logf("the node closed the connection: %v", err)
	case <-time.After(bound):
		t.Fatalf("the connection is still open %v into a client that never reads", bound)
	}
}

// An upgraded connection (a WebSocket) outlives its request, and the
// proxy relays it with no deadline: a client that stops reading held the
// relay and the backend's writer as long as it kept its connection. A
// write to it that waits past timeouts.idle ends the relay; an upgraded
// connection that is merely quiet is not cut.
func TestUpgradedClientThatNeverReadsIsCut(t *testing.T) {
	var started, finished atomic.Int32
	n := startNode(t, listenAny+`timeouts: {idle: 1s}
services:
  api: {backends: [{url: "`+serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, rw, ok := acceptWebSocket(w)
		if !ok {
			return
		}
		defer conn.Close()
		started.Add(1)
		defer finished.Add(1)
		if line, _ := rw.ReadString('\n'); line != "flood\n" {
			rw.WriteString("quiet\n") // answered after a wait longer than idle
			rw.Flush()
			return
		}
		buf := make([]byte, 64<<10)
		for range 1024 { // 64 MiB
			if _, err := conn.Write(buf); err != nil {
				return
			}
		}
	}))+`"}]}
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`)
	t.Run("quiet", func(t *testing.T) {
		c, br := dialWebSocket(t, n.Addrs().HTTPS, "/ws", 0)
		time.Sleep(1500 * time.Millisecond) // past idle, with nothing to write
		io.WriteString(c, "hello\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := br.ReadString('\n'); line != "quiet\n" {
			t.Fatalf("a quiet upgraded connection: %q, %v", line, err)
		}
	})
	t.Run("never reads", func(t *testing.T) {
		before := finished.Load()
		c, _ := dialWebSocket(t, n.Addrs().HTTPS, "/ws", 4<<10)
		io.WriteString(c, "flood\n")
		const bound = 20 * time.Second
		start := time.Now()
		for finished.Load() == before {
			if time.Since(start) > bound {
				t.Fatalf("the backend is still held %v after the client stopped reading", bound)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("backend freed after %v", time.Since(start).Round(time.Millisecond))
	})
}

// smallAnswersNode is a node with timeouts.idle 1s whose one route
// answers small, with its length declared.
func smallAnswersNode(t *testing.T, small []byte) *testNode {
	return startNode(t, listenAny+`timeouts: {idle: 1s}
services:
  api: {backends: [{url: "`+serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(small)))
		w.Write(small)
	}))+`"}]}
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`)
}

// Over HTTP/2, net/http writes a small answer after the handler returns,
// and that write waits for the client's flow-control credit. A client
// that reads no answer has, some answers in, no credit left on its
// connection: the next answer's handler waited for credit that never
// came, with its stream open, as long as the client kept the connection
// alive. Its wait too is cut after timeouts.idle (the stream is reset).
func TestHTTP2ClientThatNeverReadsSmallAnswersIsCut(t *testing.T) {
	small := make([]byte, 3000) // with its length declared: held until the handler returns
	n := smallAnswersNode(t, small)
	const window = 64 << 10 // the least net/http's client takes
	tr := &http.Transport{TLSClientConfig: insecure(), ForceAttemptHTTP2: true, HTTP2: &http.HTTP2Config{
		MaxReceiveBufferPerConnection: window, MaxReceiveBufferPerStream: window,
		SendPingTimeout: 100 * time.Millisecond, // keeps the connection alive
	}}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	defer tr.CloseIdleConnections()
	const bound = 20 * time.Second                       // 1s, with room for a loaded machine
	c := &http.Client{Transport: tr, Timeout: 2 * bound} // ends a wait the node never cuts
	var last *http.Response
	for range 4 * window / len(small) { // far more than the window holds
		resp, err := c.Get("https://" + n.Addrs().HTTPS + "/small")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close() // unread
		last = resp
	}
	start := time.Now()
	_, err := io.ReadAll(last.Body) // an answer past the window: never sent
	if time.Since(start) >= bound {
		t.Fatalf("the answer past the client's window was held %v: %v", bound, err)
	}
	if err == nil {
		t.Fatal("the answer past the client's window came whole")
	}
	t.Logf("cut after %v: %v", time.Since(start).Round(time.Millisecond), err)
}

// Over HTTP/3, quic-go writes a small answer (up to 4 KiB) after the
// handler returns, and that write waits for the client's flow-control
// credit. A client that takes none of its answers held, for as long as
// it kept its connection alive, a goroutine and the stream for each: a
// stream still being written is not idle, so quic-go's idle timeout never
// came. The write too is cut after timeouts.idle, and then, with nothing
// left in flight, the connection closes at the idle timeout.
func TestHTTP3ClientThatNeverReadsSmallAnswersIsCut(t *testing.T) {
	small := make([]byte, 3000) // with its length declared: held until the handler returns
	n := smallAnswersNode(t, small)
	// A stream window smaller than an answer's head: no answer goes out.
	took := h3test.NeverRead(t, n.Addrs().HTTPS, "/small", 20, 20*time.Second) // 2s, with room for a loaded machine
	t.Logf("closed after %v", took.Round(time.Millisecond))
}

// An HTTP/2 client that grants all the credit there is and then stops
// reading its connection altogether leaves net/http's frame writer
// waiting on the socket: the stream resets that cut a response the
// client does not take (timeouts.idle) queue behind it, so every stream's
// handler, upstream connection and backend were held as long as the
// connection stayed open. A connection whose writes have not moved for
// timeouts.idle is now closed.
func TestHTTP2ClientThatStopsReadingItsConnectionIsCut(t *testing.T) {
	var started, finished atomic.Int32
	n := startNode(t, listenAny+`timeouts: {idle: 1s}
services:
  api: {backends: [{url: "`+serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		defer finished.Add(1)
		buf := make([]byte, 64<<10)
		for range 1024 { // 64 MiB: more than any buffer on the way
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))+`"}]}
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`)
	const maxWindow = 1<<31 - 1
	c := h2test.Dial(t, n.Addrs().HTTPS, http2.Setting{ID: http2.SettingInitialWindowSize, Val: maxWindow})
	c.TLS.NetConn().(*net.TCPConn).SetReadBuffer(4 << 10)
	if err := c.WriteWindowUpdate(0, maxWindow-65535); err != nil {
		t.Fatal(err)
	}
	const streams = 10
	for i := range streams {
		if err := c.Get(uint32(2*i+1), "x", "/big"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the backend to start every stream", func() bool { return started.Load() == streams })
	const bound = 20 * time.Second // 1s, with room for a loaded machine
	start := time.Now()
	for finished.Load() < streams {
		if time.Since(start) > bound {
			t.Fatalf("%d of %d backends still held %v after the client stopped reading", streams-finished.Load(), streams, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("backends freed after %v", time.Since(start).Round(time.Millisecond))
}
