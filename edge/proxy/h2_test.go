package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"perigee/edge/upstream"
	"perigee/units"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newService is the service cfg describes, with its defaults set and checked.
func newService(t *testing.T, cfg upstream.Config) *upstream.Service {
	t.Helper()
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	svc, err := upstream.NewService("s", cfg, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// h2Front is a proxy to one backend at url speaking protocol, behind an
// HTTP/2 listener; the proxy trusts backend's certificate, if it has one.
func h2Front(t *testing.T, protocol string, backend *httptest.Server, url string, route Stream) (*http.Client, string) {
	t.Helper()
	var tm Timeouts
	tm.SetDefaults()
	p := New(tm, "test-node", quiet)
	t.Cleanup(p.Close)
	if backend != nil && backend.TLS != nil {
		roots := backend.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
		p.h2.tls.TLSClientConfig = &tls.Config{RootCAs: roots}
		p.std.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	svc := newService(t, upstream.Config{Protocol: protocol, Backends: []upstream.BackendConfig{{URL: url}}})
	front := httptest.NewUnstartedServer(p.Handler(svc, route.Over(tm.Stream)))
	front.EnableHTTP2 = true
	front.StartTLS()
	t.Cleanup(front.Close)
	return front.Client(), front.URL
}

func tlsBackend(t *testing.T, h2 bool, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = h2
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// Trailers go both ways over every upstream protocol: the client's
// request trailers reach the backend, and the backend's undeclared
// response trailers reach the client.
func TestUpstreamsForwardTrailersBothWays(t *testing.T) {
	echo := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Proto", r.Proto)
		w.Write(body)
		w.(http.Flusher).Flush() // else an HTTP/1.1 server sends Content-Length, and no trailers
		w.Header().Set(http.TrailerPrefix+"X-Echoed", r.Trailer.Get("X-Checksum"))
		w.Header().Set(http.TrailerPrefix+"X-Status", "done")
	}
	plain := httptest.NewServer(http.HandlerFunc(echo))
	t.Cleanup(plain.Close)
	for _, tc := range []struct {
		protocol, proto string
		backend         *httptest.Server
		url             string
	}{
		{upstream.HTTP1, "HTTP/1.1", plain, plain.URL},
		{upstream.HTTP1, "HTTP/1.1", tlsBackend(t, false, echo), ""},
		{upstream.H2C, "HTTP/2.0", nil, h2cBackend(t, echo)},
		{upstream.H2, "HTTP/2.0", tlsBackend(t, true, echo), ""},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			if tc.url == "" {
				tc.url = tc.backend.URL
			}
			c, front := h2Front(t, tc.protocol, tc.backend, tc.url, Stream{})
			pr, pw := io.Pipe()
			req, _ := http.NewRequest(http.MethodPost, front+"/x", pr)
			req.Trailer = http.Header{"X-Checksum": nil}
			go func() {
				pw.Write([]byte("hello"))
				req.Trailer.Set("X-Checksum", "abc123") // set before the body ends, as net/http asks
				pw.Close()
			}()
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != "hello" || resp.Header.Get("X-Proto") != tc.proto {
				t.Fatalf("%d %q via %q", resp.StatusCode, body, resp.Header.Get("X-Proto"))
			}
			if got := resp.Trailer.Get("X-Echoed"); got != "abc123" {
				t.Errorf("request trailer reached the backend as %q, want abc123", got)
			}
			if got := resp.Trailer.Get("X-Status"); got != "done" {
				t.Errorf("response trailers %v", resp.Trailer)
			}
		})
	}
}

// A backend that does not offer h2 by ALPN is not spoken to in HTTP/1.1
// behind the operator's back: 502.
func TestH2UpstreamNeedsALPN(t *testing.T) {
	backend := tlsBackend(t, false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
	c, front := h2Front(t, upstream.H2, backend, backend.URL, Stream{})
	resp, err := c.Get(front + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("%d %q, want 502", resp.StatusCode, body)
	}
}

// A backend over TLS that sends its head and then stalls is cut at
// upstream_read, and its request let go; one that never sends its head
// gets 504 at the route's response_header. Over HTTP/1.1 the standard
// transport kept only the node's response_header: an https backend that
// stalled mid-body held the request, and its connection, as long as the
// client would wait.
func TestTLSUpstreamStallsAreBounded(t *testing.T) {
	for _, tc := range []struct {
		protocol string
		h2       bool
	}{{upstream.HTTP1, false}, {upstream.H2, true}} {
		t.Run(tc.protocol, func(t *testing.T) {
			letGo := make(chan string, 2)
			backend := tlsBackend(t, tc.h2, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/stall-body" {
					w.Write([]byte("first"))
					w.(http.Flusher).Flush()
				}
				<-r.Context().Done() // the node closed the stream, or its connection
				letGo <- r.URL.Path
			})
			short := units.Duration(500 * time.Millisecond)
			c, front := h2Front(t, tc.protocol, backend, backend.URL, Stream{ResponseHeader: short, UpstreamRead: short})
			// Bounds the test's wait, and tells the node's cut from it.
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front+"/stall-head", nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("stalled head: %v, want 504", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusGatewayTimeout {
				t.Fatalf("stalled head: %d, want 504", resp.StatusCode)
			}
			req, _ = http.NewRequestWithContext(ctx, http.MethodGet, front+"/stall-body", nil)
			resp, err = c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if ctx.Err() != nil || !strings.HasPrefix(string(body), "first") {
				t.Fatalf("stalled body: %q (test deadline: %v); want the first bytes, then the node's cut", body, ctx.Err())
			}
			for range 2 {
				select {
				case <-letGo:
				case <-ctx.Done():
					t.Fatal("the node still holds a stalled backend's request")
				}
			}
		})
	}
}

// h2cBackend serves h over HTTP/2 with prior knowledge only, as gRPC
// servers do: an HTTP/1.1 request would fail.
func h2cBackend(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// An h2c service's connect failures are retried on another backend, as
// HTTP/1.1 ones are, and its health checks speak h2c.
func TestH2CRetriesConnectFailuresAndChecksHealthInH2C(t *testing.T) {
	live := h2cBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	var tm Timeouts
	tm.SetDefaults()
	p := New(tm, "test-node", quiet)
	t.Cleanup(p.Close)
	svc := newService(t, upstream.Config{Protocol: upstream.H2C, Backends: []upstream.BackendConfig{{URL: dead}, {URL: live}}})
	h := p.Handler(svc, tm.Stream)
	for i := range 4 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if rec.Code != http.StatusOK || rec.Body.String() != "HTTP/2.0" {
			t.Fatalf("request %d: %d %q", i, rec.Code, rec.Body)
		}
	}
	resp, err := p.Client(upstream.H2C).Get(live + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "HTTP/2.0" {
		t.Fatalf("health check: %d %q", resp.StatusCode, body)
	}
}

// A WebSocket to an https backend stays a tunnel: the route's read timeout,
// which now bounds https responses, leaves it to tunnel_idle.
func TestWebSocketToHTTPSBackend(t *testing.T) {
	backend := tlsBackend(t, false, func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		io.Copy(conn, rw) // echo
	})
	_, front := h2Front(t, upstream.HTTP1, backend, backend.URL, Stream{UpstreamRead: units.Duration(200 * time.Millisecond)})
	c, err := tls.Dial("tcp", strings.TrimPrefix(front, "https://"), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second)) // bounds a hang
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	time.Sleep(400 * time.Millisecond) // quiet past upstream_read
	io.WriteString(c, "ping")
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo after a quiet spell: %q, %v", got, err)
	}
}

// A 101 nobody asked for is a 502 over every upstream protocol. The
// HTTP/2 transport hands a 101 to the request's trace as a 1xx, and
// ReverseProxy relayed it as one: an HTTP/1.1 client then got a closed
// connection and an HTTP/3 client a 101 with the real head as its
// trailers.
func TestUnaskedSwitchIs502(t *testing.T) {
	h := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusSwitchingProtocols)
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "after the switch")
	}
	for _, tc := range everyUpstream(t, h) {
		t.Run(tc.name, func(t *testing.T) {
			c, front := h2Front(t, tc.protocol, tc.backend, tc.url, Stream{})
			status, body, interim := getCountingInterim(t, c, front+"/x")
			if status != http.StatusBadGateway || interim != 0 {
				t.Fatalf("%d %q after %d interim heads relayed; want a 502 and none", status, body, interim)
			}
		})
	}
}
