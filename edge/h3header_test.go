package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"perigee/h3serve/h3test"
)

// A QUIC stream that opens and never finishes its HEADERS frame is reset
// at timeouts.read_header, as an HTTP/1.1 connection is closed, though the
// client keeps the connection alive; requests on other streams are served.
func TestH3HeaderReadIsBounded(t *testing.T) {
	n := startNode(t, "timeouts: {read_header: 1s}\n"+nodeYAML("round_robin", backend(t, "b1")))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, n.Addrs().HTTPS, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{KeepAlivePeriod: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	h3test.StallHeaders(t, ctx, conn, time.Second)
	// The connection stays up: a whole request on it is served.
	resp, err := (&http3.Transport{}).NewClientConn(conn).RoundTrip(mustRequest(t, "https://"+n.Addrs().HTTPS+"/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a request on the same connection: %d", resp.StatusCode)
	}
}

func mustRequest(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// Without GOAWAY (see h3serve.Server), a drain refuses a stream opened on an
// open HTTP/3 connection with H3_REQUEST_REJECTED, which tells the client
// it was not processed, while the request in flight on it finishes.
func TestH3DrainRefusesNewStreamsAndFinishesOld(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	slow := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		w.Write([]byte("done"))
	}))
	n := startNode(t, nodeYAML("round_robin", slow))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, n.Addrs().HTTPS, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	// One connection for both requests: http3.Transport would retry a
	// refused request on a new one.
	c := (&http3.Transport{}).NewClientConn(conn)
	url := "https://" + n.Addrs().HTTPS
	result := make(chan string, 1)
	slowReq := mustRequest(t, url+"/slow")
	go func() {
		resp, err := c.RoundTrip(slowReq)
		if err != nil {
			result <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- string(b)
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- n.Shutdown(t.Context()) }()
	time.Sleep(200 * time.Millisecond)
	_, err = c.RoundTrip(mustRequest(t, url+"/new"))
	var h3err *http3.Error
	if !errors.As(err, &h3err) || h3err.ErrorCode != http3.ErrCodeRequestRejected {
		t.Errorf("a new stream while draining: %v, want H3_REQUEST_REJECTED", err)
	}
	close(release)
	if r := <-result; r != "done" {
		t.Fatalf("the request in flight got %q", r)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}
