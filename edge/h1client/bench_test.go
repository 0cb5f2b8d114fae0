//go:build unix

package h1client

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"perigee/bench/machine"
)

// BenchmarkExchange is one proxied request's exchange as edge/proxy makes
// it: a GET with a proxy's fields, a cancellable context, a route's
// timeouts, and a 64-byte answer read to EOF, against a backend that
// allocates nothing, so allocs/op is the client's own. cpu-ns/op is this
// process's CPU per exchange (client and backend), which holds up on
// shared cores where ns/op does not. Run:
//
//	go test ./edge/h1client -run '^$' -bench Exchange -benchmem
//
// docs/benchmarks.md says what each change on the exchange bought.
func BenchmarkExchange(b *testing.B) {
	addr := cannedBackend(b)
	tr := New(Options{MaxIdlePerHost: 512}, nil)
	b.Cleanup(tr.CloseIdleConnections)
	rt := tr.Route(Timeouts{ResponseHeader: 30 * time.Second, Read: 60 * time.Second, Write: 60 * time.Second})
	newReq := func(b *testing.B) (*http.Request, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/plain/x", nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header = proxiedHeader()
		return req, cancel
	}
	exchange := func(b *testing.B, req *http.Request, buf []byte) {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.ReadFull(resp.Body, buf)
		if err != nil || n != 64 {
			b.Fatalf("body: %d bytes, %v", n, err)
		}
		resp.Body.Close()
	}
	b.Run("serial", func(b *testing.B) {
		req, cancel := newReq(b)
		defer cancel()
		buf := make([]byte, 64)
		exchange(b, req, buf) // dial outside the measurement
		b.ReportAllocs()
		cpu := machine.SelfCPU()
		for b.Loop() {
			exchange(b, req, buf)
		}
		b.ReportMetric(float64(machine.SelfCPU()-cpu)/float64(b.N), "cpu-ns/op")
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(4) // 4×GOMAXPROCS exchanges in flight, as under load
		cpu := machine.SelfCPU()
		b.RunParallel(func(pb *testing.PB) {
			req, cancel := newReq(b)
			defer cancel()
			buf := make([]byte, 64)
			for pb.Next() {
				exchange(b, req, buf)
			}
		})
		b.ReportMetric(float64(machine.SelfCPU()-cpu)/float64(b.N), "cpu-ns/op")
	})
}

// proxiedHeader is what edge/proxy sends a backend for a plain GET.
func proxiedHeader() http.Header {
	return http.Header{
		"User-Agent":        {"bench"},
		"Accept":            {"*/*"},
		"X-Forwarded-For":   {"127.0.0.1"},
		"X-Forwarded-Host":  {"bench.test"},
		"X-Forwarded-Proto": {"https"},
		"Via":               {"1.1 node"},
		"X-Request-Id":      {"0123456789abcdef"},
		"Traceparent":       {"00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"},
	}
}

// cannedHead is a sample backend's response head.
const cannedHead = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Date: Tue, 01 Dec 2026 18:00:00 GMT\r\nContent-Length: 64\r\n\r\n"

// BenchmarkWriteRequest and BenchmarkParseHead are the CPU-bound parts of
// an exchange alone, whose ns/op is steadier than an exchange's.
func BenchmarkWriteRequest(b *testing.B) {
	req, err := http.NewRequest(http.MethodGet, "http://backend/plain/x", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header = proxiedHeader()
	bw := bufio.NewWriter(io.Discard)
	c := &conn{}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.writeRequest(bw, req); err != nil {
			b.Fatal(err)
		}
		bw.Flush()
	}
}

func BenchmarkParseHead(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseHead(cannedHead); err != nil {
			b.Fatal(err)
		}
	}
}

// cannedBackend answers every request head on a connection with the same
// 64-byte response, allocating nothing once a connection is open.
func cannedBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	answer := []byte(cannedHead + strings.Repeat("x", 64))
	wg.Go(func() {
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				defer c.Close()
				buf := make([]byte, 16<<10)
				n := 0
				for {
					m, err := c.Read(buf[n:])
					if err != nil {
						return
					}
					n += m
					// Requests carry no body: each head ends a request.
					for {
						i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
						if i < 0 {
							break
						}
						if _, err := c.Write(answer); err != nil {
							return
						}
						n = copy(buf, buf[i+4:n])
					}
					if n == len(buf) {
						return // a head larger than we take
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

// BenchmarkAlive is the idle probe before each reuse: one non-blocking
// read of a silent socket.
func BenchmarkAlive(b *testing.B) {
	addr := cannedBackend(b)
	tr := New(Options{}, nil)
	b.Cleanup(tr.CloseIdleConnections)
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	p := tr.pool(addr)
	c := p.pop()
	if c == nil {
		b.Fatal("no pooled connection")
	}
	defer p.put(c)
	b.ReportAllocs()
	for b.Loop() {
		if !c.alive() {
			b.Fatal("a silent connection reported dead")
		}
	}
}
