package wasm

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/http-wasm/http-wasm-host-go/tck"
	"github.com/quic-go/quic-go/http3"

	"perigee/certs"

	"perigee/units"
)

// The upstream conformance kit, run over real listeners: HTTP/1.1 on TCP,
// HTTP/2 over TLS and HTTP/3 on QUIC, each with the TCK's guest loaded in
// our host.
func TestTCK(t *testing.T) {
	h := newTestHost(t)
	// A generous deadline: the kit checks the ABI, and under -race on a
	// busy machine its large-body cases can outlast the default.
	tr := loadT(t, h, Spec{Name: "tck", Wasm: tck.GuestWASM, Settings: Settings{Pool: 2, Timeout: units.Duration(10 * time.Second)}})
	handler := NewChain(tr).Then(tck.BackendHandler())

	t.Run("HTTP/1.1", func(t *testing.T) {
		srv := httptest.NewServer(handler)
		t.Cleanup(srv.Close)
		tck.Run(t, srv.Client(), srv.URL)
	})

	t.Run("HTTP/2", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(handler)
		srv.EnableHTTP2 = true
		srv.StartTLS()
		t.Cleanup(srv.Close)
		client := srv.Client()
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("served over %s, want HTTP/2", resp.Proto)
		}
		tck.Run(t, client, srv.URL)
	})

	t.Run("HTTP/3", func(t *testing.T) {
		cert, pool := selfSigned(t)
		conn, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http3.Server{Handler: handler, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(conn) }()
		t.Cleanup(func() {
			srv.Close()
			if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				t.Errorf("http3 serve: %v", err)
			}
		})
		transport := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		t.Cleanup(func() { transport.Close() })
		tck.Run(t, &http.Client{Transport: transport, Timeout: 30 * time.Second}, "https://"+conn.LocalAddr().String())
	})
}

// selfSigned returns a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c, err := certs.SelfSigned(nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return *c, pool
}

// sharedCache makes each module compile once per test binary.
var sharedCache = must(NewHost(Options{}))

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func newTestHost(t testing.TB) *Host {
	t.Helper()
	return &Host{cache: sharedCache.cache, logger: sharedCache.logger, shared: newShared(), metrics: newGuestMetrics()}
}

func loadT(t testing.TB, h *Host, spec Spec) *Transform {
	t.Helper()
	tr, err := h.Load(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Release)
	return tr
}
