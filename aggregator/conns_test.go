package aggregator_test

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"perigee/aggregator"
	"perigee/h3serve/h3test"
)

// Anyone may open a connection to the aggregator, token or not: one client
// address holds at most connections.max_per_address on each listener, and
// the next is refused at once (TCP: reset before any TLS; QUIC:
// CONNECTION_REFUSED), counted in /metrics.
func TestConnectionsPerAddressAreBounded(t *testing.T) {
	const limit = 4
	a := startAggregator(t, func(c *aggregator.Config) { c.Connections.MaxPerAddress = limit })
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}
	for i := range limit {
		c, err := tls.DialWithDialer(d, "tcp", a.addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("TCP connection %d within the bound: %v", i, err)
		}
		defer c.Close()
	}
	c, err := d.Dial("tcp", a.addr)
	if err == nil {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		c.Write([]byte{0x16, 0x03, 0x01})
		var n int
		n, err = c.Read(make([]byte, 1))
		c.Close()
		if n != 0 {
			t.Fatalf("the connection over the bound read %d bytes", n)
		}
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the TCP connection over the bound: %v; want a reset", err)
	}

	tr := h3test.Client(t, "127.0.0.9")
	dial := func() (*quic.Conn, error) {
		return h3test.Dial(tr, a.addr, http3.NextProtoH3, &quic.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: time.Second})
	}
	for i := range limit {
		c, err := dial()
		if err != nil {
			t.Fatalf("QUIC connection %d within the bound: %v", i, err)
		}
		defer c.CloseWithError(0, "")
	}
	if _, err := dial(); !h3test.IsRefused(err) {
		t.Fatalf("the QUIC connection over the bound: %v; want CONNECTION_REFUSED", err)
	}

	// Another address (the test's own client, on 127.0.0.1) is served, and
	// the refusals are counted.
	m := a.metrics(t)
	for _, want := range []string{
		`perigee_aggregator_connections_refused_total{listener="https",reason="max_per_address"} 1`,
		`perigee_aggregator_connections_open{listener="http3"} 4`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if v := metricValue(m, `perigee_aggregator_connections_refused_total{listener="http3",reason="max_per_address"}`); v == "" || v == "0" {
		t.Errorf("QUIC refusals: %q", v)
	}
}

func TestConnectionBoundsAreValidated(t *testing.T) {
	cfg := aggregator.Config{Listen: "127.0.0.1:0", Tokens: map[string]string{"n": tokenA}, DataDir: t.TempDir()}
	cfg.Connections.MaxTotal, cfg.Connections.MaxPerAddress = 10, 20
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "connections.max_per_address: max_per_address (20) is over max_total (10)") {
		t.Fatalf("Validate: %v", err)
	}
}
