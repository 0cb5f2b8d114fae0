//go:build unix

package h1client

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rawBackend is a loopback backend written against the socket, so that it
// can misbehave. serve runs for each accepted connection, numbered from 1,
// and closes it when it returns.
type rawBackend struct {
	url    string
	opened atomic.Int32
}

func newRawBackend(t *testing.T, serve func(n int32, c net.Conn, br *bufio.Reader)) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{url: "http://" + ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := b.opened.Add(1)
			wg.Go(func() {
				defer c.Close()
				serve(n, c, bufio.NewReader(c))
			})
		}
	})
	return b
}

// answer reads requests on c until it closes, and answers each with the
// connection's number and the request's body.
func answer(n int32, c net.Conn, br *bufio.Reader) {
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		b, _ := io.ReadAll(req.Body)
		body := fmt.Sprintf("conn %d: %s", n, b)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
}

// streamed is a request body of unknown length without GetBody, as a proxy
// forwards a client's: it cannot be sent twice.
func streamed(s string) io.Reader { return io.MultiReader(strings.NewReader(s)) }

func post(t *testing.T, url, body string) *http.Request {
	req, err := http.NewRequest(http.MethodPost, url, streamed(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestUnsolicitedBytes: whatever a backend sends on a connection after the
// response it was asked for must never be read as the next request's answer.
func TestUnsolicitedBytes(t *testing.T) {
	for _, tc := range []struct {
		name          string
		method, reply string
		extra         string // sent once the client has the reply
	}{
		{"forged response after a response", "GET",
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"},
		{"HEAD answered with a body", "HEAD",
			"HTTP/1.1 200 OK\r\nContent-Length: 44\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"},
		{"HEAD answered with a body at once", "HEAD",
			"HTTP/1.1 200 OK\r\nContent-Length: 44\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged", ""},
		{"204 with a body", "GET",
			"HTTP/1.1 204 No Content\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"},
		{"304 with a chunked body", "GET",
			"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
			"0\r\n\r\n"},
		{"a stray byte", "GET",
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got1 := make(chan struct{})
			sent := make(chan struct{})
			b := newRawBackend(t, func(n int32, c net.Conn, br *bufio.Reader) {
				if n > 1 {
					answer(n, c, br)
					return
				}
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, tc.reply)
				<-got1
				io.WriteString(c, tc.extra)
				close(sent)
				answer(n, c, br)
			})
			tr := newTransport(t, Options{}, nil)
			req, _ := http.NewRequest(tc.method, b.url, nil)
			do(t, tr, req)
			close(got1)
			<-sent
			landed(t, tr, b.url)
			if _, body := do(t, tr, get(t, b.url)); body != "conn 2: " {
				t.Fatalf("second request got %q, want the answer of a new connection", body)
			}
		})
	}
}

// closeWhenIdle serves requests on c, and closes c once it has been idle
// for d, as Node.js (5 s) and most servers do; reset closes it with a RST.
func closeWhenIdle(d time.Duration, reset bool, closed chan<- struct{}) func(int32, net.Conn, *bufio.Reader) {
	return func(n int32, c net.Conn, br *bufio.Reader) {
		defer func() {
			if reset {
				c.(*net.TCPConn).SetLinger(0)
			}
			c.Close()
			closed <- struct{}{}
		}()
		for {
			c.SetReadDeadline(time.Now().Add(d))
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(req.Body)
			body := fmt.Sprintf("conn %d: %s", n, b)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	}
}

// landed waits until what the backend sent on the pooled connection to
// url (bytes, FIN or RST) has reached our socket: loopback delivers it as
// the backend's write returns, but a loaded machine may lag. Without a
// pooled connection there is nothing to wait for.
func landed(t *testing.T, tr *Transport, url string) {
	t.Helper()
	p := tr.pool(strings.TrimPrefix(url, "http://"))
	c := p.pop()
	if c == nil {
		return
	}
	defer p.put(c)
	var n int
	var err error
	c.raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for n, err = unix.Poll(fds, 10_000); err == unix.EINTR; n, err = unix.Poll(fds, 10_000) {
		}
	})
	if n != 1 {
		t.Fatalf("nothing the backend sent arrived (%v)", err)
	}
}

// TestBackendClosedIdle: a POST after the backend closed the pooled
// connection goes on a new one, since nothing of it was sent.
func TestBackendClosedIdle(t *testing.T) {
	for _, reset := range []bool{false, true} {
		t.Run(fmt.Sprintf("reset=%v", reset), func(t *testing.T) {
			closed := make(chan struct{}, 8)
			b := newRawBackend(t, closeWhenIdle(20*time.Millisecond, reset, closed))
			tr := newTransport(t, Options{}, nil)
			for i := range 3 {
				if _, body := do(t, tr, post(t, b.url, "once")); body != fmt.Sprintf("conn %d: once", i+1) {
					t.Fatalf("POST %d: got %q", i+1, body)
				}
				<-closed // the backend gave up on the pooled connection
				landed(t, tr, b.url)
			}
		})
	}
}

// TestResendWhenNothingWritten: a request whose first write fails sent
// nothing, and goes again on a new connection, whatever its method.
func TestResendWhenNothingWritten(t *testing.T) {
	b := newRawBackend(t, answer)
	tr := newTransport(t, Options{}, nil)
	p := tr.pool(strings.TrimPrefix(b.url, "http://"))
	p.put(&conn{nc: brokenConn{}, pool: p})
	req, _ := http.NewRequest(http.MethodPost, b.url, strings.NewReader("once"))
	if _, body := do(t, tr, req); body != "conn 1: once" {
		t.Fatalf("got %q", body)
	}
}

// brokenConn fails every write, as a socket the peer reset does.
type brokenConn struct{ net.Conn }

var errReset = errors.New("connection reset by peer")

func (brokenConn) Write([]byte) (int, error)        { return 0, errReset }
func (brokenConn) Read([]byte) (int, error)         { return 0, errReset }
func (brokenConn) Close() error                     { return nil }
func (brokenConn) SetReadDeadline(time.Time) error  { return nil }
func (brokenConn) SetWriteDeadline(time.Time) error { return nil }

// TestStalledBackend: a backend that stops sending mid-body, or stops
// reading the request, fails the exchange at the idle deadline.
func TestStalledBackend(t *testing.T) {
	release := make(chan struct{})
	b := newRawBackend(t, func(n int32, c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.URL.Path == "/upload" {
			<-release // reads no more of the body
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
		<-release
	})
	t.Cleanup(func() { close(release) }) // before the backend's, which waits for its handlers
	const d = 50 * time.Millisecond
	check := func(t *testing.T, err error, start time.Time) {
		t.Helper()
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("err = %v, want a timeout", err)
		}
		if took := time.Since(start); took > 20*d {
			t.Fatalf("a stall of the backend took %v to fail, with an idle timeout of %v", took, d)
		}
	}
	read := func(t *testing.T, tr *Transport, req *http.Request) {
		start := time.Now()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, err = io.ReadAll(resp.Body)
		check(t, err, start)
	}
	t.Run("read, from Options", func(t *testing.T) {
		read(t, newTransport(t, Options{ReadTimeout: d}, nil), get(t, b.url))
	})
	t.Run("read, from the context", func(t *testing.T) {
		req := get(t, b.url)
		read(t, newTransport(t, Options{}, nil), req.WithContext(WithTimeouts(req.Context(), Timeouts{Read: d})))
	})
	t.Run("write", func(t *testing.T) {
		tr := newTransport(t, Options{WriteTimeout: d}, nil)
		req, _ := http.NewRequest(http.MethodPost, b.url+"/upload", io.LimitReader(&pattern{}, 64<<20))
		start := time.Now()
		_, err := tr.RoundTrip(req)
		check(t, err, start)
	})
}

// TestAliveIsCheap: the check before each reuse allocates nothing.
func TestAliveIsCheap(t *testing.T) {
	b := newRawBackend(t, answer)
	tr := newTransport(t, Options{}, nil)
	do(t, tr, get(t, b.url))
	c := tr.pool(strings.TrimPrefix(b.url, "http://")).pop()
	if c == nil || c.raw == nil {
		t.Fatal("no pooled socket to check")
	}
	defer c.nc.Close()
	if n := testing.AllocsPerRun(100, func() {
		if !c.alive() {
			t.Fatal("a silent connection reported dead")
		}
	}); n != 0 {
		t.Fatalf("alive allocates %v times a call", n)
	}
}

// TestResetMidBody: a backend that resets the connection halfway through a
// body fails that body, and the next request gets a new connection.
func TestResetMidBody(t *testing.T) {
	b := newRawBackend(t, func(n int32, c net.Conn, br *bufio.Reader) {
		if n > 1 {
			answer(n, c, br)
			return
		}
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
		c.(*net.TCPConn).SetLinger(0) // the deferred Close sends a RST
	})
	tr := newTransport(t, Options{}, nil)
	resp, err := tr.RoundTrip(get(t, b.url))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("a body cut by a reset read without error")
	}
	resp.Body.Close()
	if _, body := do(t, tr, get(t, b.url)); body != "conn 2: " {
		t.Fatalf("next request got %q", body)
	}
}

// TestDeadlinesAcrossExchanges: each exchange on a pooled connection is
// held to its own timeouts, whatever an earlier exchange on it had: a
// shorter one before does not cut it, a longer one before does not
// lengthen it, and one that expired while the connection sat idle
// neither fails the next exchange nor costs the connection.
func TestDeadlinesAcrossExchanges(t *testing.T) {
	// short is long enough for an exchange to finish on a loaded machine;
	// pause is longer, so that a short deadline left set would cut it.
	const short, pause = 200 * time.Millisecond, 600 * time.Millisecond
	release := make(chan struct{})
	b := newRawBackend(t, func(n int32, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/late": // the head after a pause
				time.Sleep(pause)
			case "/slowbody": // part of the body, a pause, the rest
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
				time.Sleep(pause)
				io.WriteString(c, "cd")
				continue
			case "/upload": // reads the body only after a pause
				time.Sleep(pause)
			case "/never":
				<-release
				return
			}
			n, _ := io.Copy(io.Discard, req.Body)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n%4d", n%10000)
		}
	})
	t.Cleanup(func() { close(release) })
	tr := newTransport(t, Options{}, nil)
	shortRoute := tr.Route(Timeouts{ResponseHeader: short, Read: short, Write: short})
	longRoute := tr.Route(Timeouts{ResponseHeader: 20 * time.Second, Read: 20 * time.Second, Write: 20 * time.Second})
	sameConn := func(t *testing.T) {
		t.Helper()
		if n := b.opened.Load(); n != 1 {
			t.Fatalf("backend saw %d connections, want the one reused", n)
		}
	}

	t.Run("shorter before", func(t *testing.T) {
		do(t, shortRoute, get(t, b.url+"/now"))
		do(t, longRoute, get(t, b.url+"/late"))
		do(t, shortRoute, get(t, b.url+"/now"))
		do(t, longRoute, get(t, b.url+"/slowbody"))
		do(t, shortRoute, get(t, b.url+"/now"))
		req, _ := http.NewRequest(http.MethodPost, b.url+"/upload", io.LimitReader(&pattern{}, 32<<20))
		do(t, longRoute, req)
		sameConn(t)
	})
	t.Run("expired while idle", func(t *testing.T) {
		do(t, shortRoute, get(t, b.url+"/now"))
		time.Sleep(3 * short)
		req, _ := http.NewRequest(http.MethodPost, b.url+"/now", strings.NewReader("body"))
		do(t, shortRoute, req)
		sameConn(t)
	})
	t.Run("longer before", func(t *testing.T) {
		do(t, longRoute, get(t, b.url+"/now"))
		start := time.Now()
		_, err := shortRoute.RoundTrip(get(t, b.url+"/never"))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !strings.Contains(err.Error(), "no response head within "+short.String()) {
			t.Fatalf("err = %v, want the head timeout of %v", err, short)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("a head timeout of %v took %v, as if an earlier exchange's held", short, took)
		}
	})
}

// A method is a token, as net/http.Transport requires: one with a space
// or a line break (a transform may set any) was written into the request
// line as it came, a second request smuggled onto the backend connection
// whose answer the next client on it would have read.
func TestInvalidMethodIsRefused(t *testing.T) {
	b := newRawBackend(t, answer)
	tr := newTransport(t, Options{}, nil)
	for _, m := range []string{"GET /admin HTTP/1.1\r\nHost: internal\r\n\r\nGET", "GE T", "GET\x00", "(GET)"} {
		req := get(t, b.url+"/x")
		req.Method = m
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Errorf("method %q was sent", m)
		}
	}
	if n := b.opened.Load(); n != 0 {
		t.Fatalf("the backend saw %d connections, want none", n)
	}
}

// closeNotes is a request body that says when it was closed.
type closeNotes struct {
	io.Reader
	closed chan struct{}
	once   sync.Once
}

func (b *closeNotes) Close() error { b.once.Do(func() { close(b.closed) }); return nil }

// TestEarlyAnswerIsRelayedAtOnce: a backend that answers (413, 401)
// before it has read the request body, then reads no more, has its answer
// relayed as soon as it comes: not after a write timeout, nor after a slow
// client's whole body. The body's write stops, and the connection is not
// used again.
func TestEarlyAnswerIsRelayedAtOnce(t *testing.T) {
	release := make(chan struct{})
	b := newRawBackend(t, func(n int32, c net.Conn, br *bufio.Reader) {
		if n > 1 {
			answer(n, c, br)
			return
		}
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
		<-release // and never reads the body
	})
	t.Cleanup(func() { close(release) })
	early := func(t *testing.T, tr *Transport, body io.ReadCloser) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, b.url, body)
		type result struct {
			resp *http.Response
			err  error
		}
		got := make(chan result, 1)
		go func() { resp, err := tr.RoundTrip(req); got <- result{resp, err} }()
		var r result
		select {
		case r = <-got:
		case <-time.After(20 * time.Second):
			t.Fatal("the backend's early answer waits for a body it will never read")
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		msg, err := io.ReadAll(r.resp.Body)
		r.resp.Body.Close()
		if r.resp.StatusCode != 413 || string(msg) != "too large" || err != nil {
			t.Fatalf("got %d %q (%v), want the backend's 413", r.resp.StatusCode, msg, err)
		}
	}
	t.Run("endless body", func(t *testing.T) {
		b.opened.Store(0)
		tr := newTransport(t, Options{}, nil)
		body := &closeNotes{Reader: &pattern{}, closed: make(chan struct{})}
		early(t, tr, body)
		select {
		case <-body.closed:
		case <-time.After(20 * time.Second):
			t.Fatal("the body is still being written to a backend that answered")
		}
		if _, got := do(t, tr, get(t, b.url)); got != "conn 2: " {
			t.Fatalf("the next request got %q: the connection of an unfinished request was reused", got)
		}
	})
	t.Run("slow client", func(t *testing.T) {
		b.opened.Store(0)
		pr, pw := io.Pipe()
		defer pw.Close()
		go pw.Write([]byte("the first bytes of a body that comes slowly"))
		early(t, newTransport(t, Options{}, nil), pr)
	})
}
