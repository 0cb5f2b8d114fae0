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
