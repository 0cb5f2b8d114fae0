package h3serve

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"perigee/certs"
	"perigee/h3serve/h3test"
	"perigee/memtest"
)

// serve starts a Server for h on loopback and returns its address.
func serve(t *testing.T, h http.Handler, readHeader time.Duration) (*Server, string) {
	t.Helper()
	return serveWith(t, &http3.Server{Handler: h}, readHeader)
}

// serveWith is serve with srv's settings and opts.
func serveWith(t *testing.T, srv *http3.Server, readHeader time.Duration, opts ...Option) (*Server, string) {
	t.Helper()
	cert, err := certs.SelfSigned(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := New(srv, http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{*cert}}), readHeader, opts...)
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(udp) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		udp.Close()
	})
	return s, udp.LocalAddr().String()
}

func dial(t *testing.T, ctx context.Context, addr string) *quic.Conn {
	t.Helper()
	conn, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{KeepAlivePeriod: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return conn
}

func client(t *testing.T) *http.Client {
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func get(t *testing.T, rt http.RoundTripper, url string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })

// A stream that opens and never finishes its HEADERS frame is reset at
// readHeader, though the client keeps its connection alive; a request on
// another stream of it is served.
func TestHeaderReadIsBounded(t *testing.T) {
	const readHeader = time.Second
	_, addr := serve(t, ok, readHeader)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := dial(t, ctx, addr)
	h3test.StallHeaders(t, ctx, conn, readHeader)
	if got := get(t, (&http3.Transport{}).NewClientConn(conn), "https://"+addr+"/"); got != "ok" {
		t.Fatalf("a request on the same connection: %q", got)
	}
}

// The deadline is on the headers only: a body slower than readHeader is
// the handler's to bound.
func TestBodyOutlastsTheHeaderDeadline(t *testing.T) {
	const readHeader = 200 * time.Millisecond
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%q %v", b, err)
	}), readHeader)
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("a"))
		time.Sleep(3 * readHeader)
		pw.Write([]byte("b"))
		pw.Close()
	}()
	resp, err := client(t).Post("https://"+addr+"/", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != `"ab" <nil>` {
		t.Fatalf("a slow body: %s", b)
	}
}

// Without GOAWAY (see Server), a drain refuses a stream opened on an open
// connection with H3_REQUEST_REJECTED, which tells the client it was not
// processed, while the request in flight on it finishes.
func TestDrainRefusesNewStreamsAndFinishesOld(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	s, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		w.Write([]byte("done"))
	}), time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// One connection for both requests: http3.Transport would retry a
	// refused request on a new one.
	c := (&http3.Transport{}).NewClientConn(dial(t, ctx, addr))
	result := make(chan string, 1)
	go func() { result <- get(t, c, "https://"+addr+"/slow") }()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	for {
		s.mu.Lock()
		draining := s.draining
		s.mu.Unlock()
		if draining {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/new", nil)
	_, err := c.RoundTrip(req)
	var h3err *http3.Error
	if !errors.As(err, &h3err) || h3err.ErrorCode != http3.ErrCodeRequestRejected {
		t.Errorf("a new stream while draining: %v, want H3_REQUEST_REJECTED", err)
	}
	close(release)
	if r := <-result; r != "done" {
		t.Fatalf("the request in flight got %q", r)
	}
	// The client keeps its connection: Close ends the drain.
	s.Close()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// Request streams run on workers kept between requests; a server that
// closes leaves none behind, without waiting out their idle time.
func TestWorkersEndWithClose(t *testing.T) {
	s, addr := serve(t, ok, time.Second)
	c := client(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 4 {
				if got := get(t, c.Transport, "https://"+addr+"/"); got != "ok" {
					t.Errorf("GET: %q", got)
				}
			}
		})
	}
	wg.Wait()
	if workers() == 0 {
		t.Fatal("no worker waits for the next stream after the requests")
	}
	s.Close()
	deadline := time.Now().Add(workerIdle / 2)
	for workers() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still wait after the server closed", workers())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// workers counts the goroutines in Server.worker.
func workers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("h3serve.(*Server).worker("))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// EndedWithHeaders sees a GET whose stream ended with its HEADERS frame
// (the client writes HEADERS and FIN in two calls, which usually leave in
// one packet: one in twenty is plenty), never a request whose body is
// still to come, nor one another server served.
func TestEndedWithHeaders(t *testing.T) {
	var ended atomic.Int64
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if EndedWithHeaders(r) {
			ended.Add(1)
		}
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %q %v", r.Method, b, err)
	}), time.Second)
	c := client(t)
	url := "https://" + addr + "/"
	for range 20 {
		if got := get(t, c.Transport, url); got != `GET "" <nil>` {
			t.Fatalf("GET: %s", got)
		}
	}
	if ended.Load() == 0 {
		t.Fatal("no GET of twenty was seen to end with its HEADERS")
	}
	ended.Store(0)
	for range 20 {
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte("a"))
			time.Sleep(10 * time.Millisecond)
			pw.Write([]byte("bc"))
			pw.Close()
		}()
		resp, err := c.Post(url, "text/plain", pr)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != `POST "abc" <nil>` {
			t.Fatalf("POST: %s", b)
		}
	}
	if ended.Load() != 0 {
		t.Fatalf("%d POSTs with a body to come were seen to end with their HEADERS", ended.Load())
	}
	r, _ := http.NewRequest(http.MethodGet, url, strings.NewReader(""))
	if EndedWithHeaders(r) {
		t.Fatal("a request no Server served was seen to end with its HEADERS")
	}
}

// GetFrame is a request quic-go's server parses.
func TestGetFrame(t *testing.T) {
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", r.Method, r.Host, r.URL.Path)
	}), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	str, err := dial(t, ctx, addr).OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	str.Write(h3test.GetFrame("example.com", "/a/b"))
	str.Close()
	str.SetReadDeadline(time.Now().Add(30 * time.Second))
	answer, err := io.ReadAll(str)
	if err != nil || !bytes.Contains(answer, []byte("GET example.com /a/b")) {
		t.Fatalf("the answer: %q, %v", answer, err)
	}
}

// WithWriteTimeout fails a response's writes that a client gives no
// credit for, and frees the handler, though the client keeps its
// connection alive.
func TestWriteTimeout(t *testing.T) {
	const write = 200 * time.Millisecond
	wrote := make(chan error, 1)
	_, addr := serveWith(t, &http3.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := w.Write(make([]byte, 64<<10))
		wrote <- err
	})}, 0, WithWriteTimeout(write))
	conn, err := h3test.Dial(h3test.Client(t, "127.0.0.1"), addr, http3.NextProtoH3, &quic.Config{
		InitialStreamReceiveWindow: 100, MaxStreamReceiveWindow: 100, KeepAlivePeriod: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	str.Write(h3test.GetFrame("x", "/"))
	str.Close() // and never read
	select {
	case err := <-wrote:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the handler's write: %v, want the deadline exceeded", err)
		}
	case <-time.After(50 * write):
		t.Fatalf("the handler's write still waits %v after the write timeout", 50*write)
	}
}

// 0-RTT is off unless srv's QUICConfig turns it on: http3.Server's own
// default, for a nil QUICConfig, is on, and a request in 0-RTT data can
// be replayed. A server that allows it takes 0-RTT, so the check can fail.
func TestNo0RTTByDefault(t *testing.T) {
	_, addr := serve(t, ok, 0)
	if h3test.Used0RTT(t, h3test.Client(t, "127.0.0.1"), addr) {
		t.Fatal("the server took 0-RTT data with a nil QUICConfig")
	}
	_, allowing := serveWith(t, &http3.Server{Handler: ok, QUICConfig: &quic.Config{Allow0RTT: true}}, 0)
	if !h3test.Used0RTT(t, h3test.Client(t, "127.0.0.1"), allowing) {
		t.Fatal("a server that allows 0-RTT did not take it: the check cannot fail")
	}
}

// quic-go reads nothing of a peer's QPACK encoder and decoder streams (it
// uses no dynamic table) and leaves them open: what a client sent on them
// stayed in the connection's receive window, unread, until the
// connection closed, 768 KiB a connection. The server reads and drops
// it: a client can send far more than any window.
func TestQPACKStreamsAreDrained(t *testing.T) {
	_, addr := serve(t, ok, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := dial(t, ctx, addr)
	const total = 8 << 20                    // ten times the connection's receive window
	for _, typ := range []byte{0x02, 0x03} { // encoder, decoder
		str, err := conn.OpenUniStream()
		if err != nil {
			t.Fatal(err)
		}
		str.SetWriteDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 64<<10)
		buf[0] = typ
		sent := 0
		for sent < total {
			n, err := str.Write(buf)
			sent += n
			if err != nil {
				t.Fatalf("stream type %#x: the server took %d KiB, then %v", typ, sent>>10, err)
			}
			buf[0] = 0x20 // Set Dynamic Table Capacity 0, on the encoder stream; anything, on the decoder's
		}
	}
}

// quic-go reads a request stream's header block into memory, and a
// connection may open 100 streams: each of which sent most of a 1 MB
// HEADERS frame and never the rest, so that one connection held over
// 100 MiB until the header deadline, where over HTTP/2 a connection
// reads one header block at a time. A connection now has at most
// maxHeaderReads streams whose headers are being read; the rest wait in
// quic-go, their bytes within the connection's flow-control window.
func TestHeaderReadsPerConnectionAreBounded(t *testing.T) {
	_, addr := serve(t, ok, time.Minute) // MaxHeaderBytes: quic-go's 1 MiB
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := dial(t, ctx, addr)
	const streams, sent = 40, 900_000
	block := make([]byte, sent) // one for all, outside the measure
	grew := memtest.PeakGrowthDuring(func() {
		for range streams {
			str, err := conn.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			str.Write([]byte{0x01, 0x80, 0x0f, 0x42, 0x40}) // HEADERS of 1,000,000 bytes
			str.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			str.Write(block) // and never the rest
		}
	})
	t.Logf("%d streams each sending %d KB of a header block: heap peak +%d MiB", streams, sent/1000, grew>>20)
	if grew > 24<<20 {
		t.Fatalf("the heap grew %d MiB while one connection's streams sent unfinished header blocks", grew>>20)
	}
}

// A request's trailers are in r.Trailer at the body's end, as net/http's
// servers put them, for a handler working on a copy of r too (WithContext,
// as every middleware makes): quic-go put them in a new map on its own
// request only, so a copy saw the names with no values.
func TestRequestTrailersReachACopyOfTheRequest(t *testing.T) {
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(context.WithValue(r.Context(), struct{}{}, 1))
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%q", r.Trailer["X-Checksum"])
	}), time.Second)
	req, err := http.NewRequest(http.MethodPost, "https://"+addr+"/", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	req.Trailer = http.Header{"X-Checksum": {"abc123"}}
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != `["abc123"]` {
		t.Fatalf("the handler's copy of the request had trailer X-Checksum %s, want [\"abc123\"]", b)
	}
}

// quic-go reads a unidirectional stream's type with no deadline, and the
// stream holds one of the connection's 100 unidirectional stream slots and
// a goroutine until it arrives: a client that opened them all with half a
// type each held 100 goroutines and streams per connection for as long as
// it kept the connection alive. The type must come within readHeader, or
// the stream's reading is stopped with H3_STREAM_CREATION_ERROR; the
// control stream, once typed, is read on without a deadline.
func TestUnidirectionalStreamTypeIsBounded(t *testing.T) {
	const readHeader = 300 * time.Millisecond
	_, addr := serve(t, ok, readHeader)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := dial(t, ctx, addr)
	cc := (&http3.Transport{}).NewClientConn(conn) // its control stream, typed at once
	var stalled []*quic.SendStream
	for range 20 {
		str, err := conn.OpenUniStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := str.Write([]byte{0x40}); err != nil { // the first byte of a two-byte type
			t.Fatal(err)
		}
		stalled = append(stalled, str)
	}
	for i, str := range stalled {
		select {
		case <-str.Context().Done():
		case <-time.After(15 * readHeader):
			t.Fatalf("stream %d: still held %v after sending half its type", i, 15*readHeader)
		}
		var se *quic.StreamError
		if err := context.Cause(str.Context()); !errors.As(err, &se) || se.ErrorCode != quic.StreamErrorCode(http3.ErrCodeStreamCreationError) {
			t.Fatalf("stream %d ended with %v, want the server to stop reading it with H3_STREAM_CREATION_ERROR", i, err)
		}
	}
	if got := get(t, cc, "https://"+addr+"/"); got != "ok" { // past readHeader: the control stream lives on
		t.Fatalf("a request on the same connection: %q", got)
	}
}
