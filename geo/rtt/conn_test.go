package rtt_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"perigee/certs"
	"perigee/geo/rtt"
)

func TestTCPRTTReadsKernelEstimate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("ping"))
	io.ReadFull(c, make([]byte, 4))
	d, ok := rtt.TCPRTT(c)
	if !ok || d <= 0 || d > time.Second {
		t.Fatalf("TCPRTT = %v, %v", d, ok)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, ok := rtt.TCPRTT(a); ok {
		t.Fatal("RTT from a pipe")
	}
}

func TestSampleIsRateLimitedPerConnection(t *testing.T) {
	type result struct {
		d  time.Duration
		ok bool
	}
	results := make(chan result, 4)
	srv := &http.Server{
		ConnContext: rtt.ConnContext,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d, ok := rtt.Sample(r.Context(), time.Now(), time.Hour)
			results <- result{d, ok}
		}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	for range 2 {
		resp, err := client.Get("http://" + ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	first, second := <-results, <-results
	if !first.ok || first.d <= 0 {
		t.Errorf("first request not sampled: %+v", first)
	}
	if second.ok {
		t.Errorf("second request on the same connection sampled again: %+v", second)
	}
	if _, ok := rtt.Sample(context.Background(), time.Now(), time.Second); ok {
		t.Error("sample without a connection")
	}
}

func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	c, err := certs.SelfSigned(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{*c}, NextProtos: []string{"perigee-test"}}
}

func TestQUICRTTFromConnectionStats(t *testing.T) {
	ln, err := quic.ListenAddr("127.0.0.1:0", selfSigned(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	served := make(chan *quic.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			served <- nil
			return
		}
		served <- c
	}()
	conn, err := quic.DialAddr(ctx, ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"perigee-test"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	sc := <-served
	if sc == nil {
		t.Fatal("accept failed")
	}
	defer sc.CloseWithError(0, "")
	// The server has an RTT sample once the client's handshake ACKs arrive.
	<-sc.HandshakeComplete()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if d, ok := rtt.QUICRTT(sc); ok {
			if d > time.Second {
				t.Fatalf("loopback RTT %v", d)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no RTT sample")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, ok := rtt.QUICRTT(nil); ok {
		t.Fatal("RTT of a nil connection")
	}
}
