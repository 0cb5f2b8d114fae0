package aggregator_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"perigee/aggregator"
	"perigee/h3serve/h3test"
)

// Anyone, token or not, could open QUIC connections to the aggregator, each
// with a request stream that never finishes its HEADERS frame, and keep
// them with keep-alives for as long as they liked: http3.Server reads a
// request's headers with no deadline. Such a stream is now reset at the
// header deadline (H3_REQUEST_INCOMPLETE), the connection goes on serving,
// and once it has no request left it is closed at the idle timeout, keep-
// alives or not.
func TestAggregatorH3HeaderReadAndIdleAreBounded(t *testing.T) {
	const readHeader, idle = time.Second, 2 * time.Second
	a := startAggregator(t, func(c *aggregator.Config) { aggregator.SetListenerTimeouts(c, readHeader, idle) })
	pem, err := os.ReadFile(a.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, a.addr, &tls.Config{RootCAs: pool, NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{KeepAlivePeriod: 200 * time.Millisecond, MaxIdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	h3test.StallHeaders(t, ctx, conn, readHeader)
	// The connection goes on: a whole request on it is served.
	req, _ := http.NewRequest(http.MethodGet, a.url("/metrics"), nil)
	resp, err := (&http3.Transport{}).NewClientConn(conn).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a request on the same connection: %s", resp.Status)
	}
	// Then, with nothing in flight, the aggregator closes it. Nothing else
	// would: the keep-alives hold the client's own idle timeout off. So the
	// close is awaited, generously, and not timed: a loaded machine fires
	// the idle timer late.
	idleFrom := time.Now()
	select {
	case <-conn.Context().Done():
	case <-time.After(30 * idle):
	}
	var ae *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeNoError) {
		t.Fatalf("after %v idle: %v, want the aggregator to close the connection with H3_NO_ERROR", time.Since(idleFrom), err)
	}
	t.Logf("an idle connection was closed after %v; the idle timeout is %v", time.Since(idleFrom), idle)
}

// TCP answers advertise HTTP/3 on the aggregator's own port.
func TestAggregatorAdvertisesHTTP3(t *testing.T) {
	a := startAggregator(t, nil)
	resp, err := a.client.Get(a.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, port, _ := net.SplitHostPort(a.addr)
	if got, want := resp.Header.Get("Alt-Svc"), `h3=":`+port+`"; ma=86400`; got != want {
		t.Fatalf("Alt-Svc: %q, want %q", got, want)
	}
}
