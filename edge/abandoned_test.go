package edge

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"

	"perigee/h2test"
	"perigee/h3serve/h3test"
)

// countingBackend answers after a millisecond and counts the connections
// it accepted.
func countingBackend(t *testing.T) (url string, conns *atomic.Int64) {
	conns = new(atomic.Int64)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond)
		w.Write([]byte("hi"))
	}), ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), conns
}

// floodPairs is more requests than a connection may abandon.
const floodPairs = 20000

// A client that opens requests and cancels them at once (HTTP/2's rapid
// reset, and its HTTP/3 twin) loses its connection once it has abandoned
// half of a run of its requests. Before, one such connection made the node
// dial thousands of backend connections a second and close each, left in
// TIME_WAIT, until the node's ephemeral ports ran out; now what one costs
// is bounded by the run.
func TestRapidResetClosesTheConnection(t *testing.T) {
	be, conns := countingBackend(t)
	n := startNode(t, nodeYAML("round_robin", be))
	// The client resets each stream, or has the node reset it with a
	// frame the stream may not carry ("MadeYouReset", CVE-2025-8671: a
	// zero WINDOW_UPDATE is a stream error), which cancels it alike.
	abandons := []struct {
		name    string
		abandon func(h *h2test.Conn, id uint32) error
	}{
		{"h2", func(h *h2test.Conn, id uint32) error { return h.WriteRSTStream(id, http2.ErrCodeCancel) }},
		{"h2 resets made by the node", func(h *h2test.Conn, id uint32) error {
			h.AllowIllegalWrites = true
			return h.WriteWindowUpdate(id, 0)
		}},
	}
	for _, c := range abandons {
		t.Run(c.name, func(t *testing.T) { rapidResetH2(t, n, conns, c.abandon) })
	}
	t.Run("h3", func(t *testing.T) {
		conns.Store(0)
		conn, err := dialQUIC(h3test.Client(t, "127.0.0.1"), n.Addrs().HTTPS)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseWithError(0, "")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sent := 0
		for range floodPairs {
			str, err := conn.OpenStreamSync(ctx)
			if err != nil {
				break
			}
			// The request goes whole (a reset would discard it unsent);
			// the client takes none of the answer.
			str.Write(h3test.GetFrame("x", "/"))
			str.Close()
			str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
			sent++
		}
		select {
		case <-conn.Context().Done():
		case <-ctx.Done():
			t.Fatalf("the connection is open after %d requests abandoned", sent)
		}
		var ae *quic.ApplicationError
		if err := context.Cause(conn.Context()); !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad) {
			t.Fatalf("the connection ended with %v, want the node's H3_EXCESSIVE_LOAD", err)
		}
		checkAbandoned(t, n, conns, sent)
	})
}

// rapidResetH2 opens requests on one HTTP/2 connection and abandons each
// at once, until the node closes the connection.
func rapidResetH2(t *testing.T, n *testNode, conns *atomic.Int64, abandon func(h *h2test.Conn, id uint32) error) {
	conns.Store(0)
	h := h2test.Dial(t, n.Addrs().HTTPS)
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		for {
			if _, err := h.ReadFrame(); err != nil {
				return
			}
		}
	}()
	sent := 0
	for i := range uint32(floodPairs) {
		id := 2*i + 1
		if h.Get(id, "x", "/") != nil || abandon(h, id) != nil {
			break
		}
		sent++
		if i%100 == 99 {
			time.Sleep(10 * time.Millisecond) // a pace the node's handlers keep up with
		}
	}
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatalf("the connection is open after %d requests abandoned", sent)
	}
	checkAbandoned(t, n, conns, sent)
}

func checkAbandoned(t *testing.T, n *testNode, conns *atomic.Int64, sent int) {
	t.Helper()
	if sent == floodPairs {
		t.Errorf("all %d requests were abandoned on one connection", sent)
	}
	if got := conns.Load(); got > abandonRun/2 {
		t.Errorf("%d abandoned requests made the node open %d backend connections; want at most %d", sent, got, abandonRun/2)
	}
	_, metrics := get(t, h1Client(), "http://"+n.Addrs().Admin+"/metrics")
	if !strings.Contains(metrics, "perigee_abandoning_connections_closed_total") {
		t.Errorf("no perigee_abandoning_connections_closed_total in /metrics")
	}
	t.Logf("closed after %d abandoned requests; %d backend connections", sent, conns.Load())
}

// A client that cancels some of its requests, as a browser leaving a
// page does, keeps its connection.
func TestCancellingSomeRequestsKeepsTheConnection(t *testing.T) {
	be, _ := countingBackend(t)
	n := startNode(t, nodeYAML("round_robin", be))
	h := h2test.Dial(t, n.Addrs().HTTPS)
	for i := range uint32(1500) {
		id := 2*i + 1
		if err := h.Get(id, "x", "/"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if i%3 == 0 {
			if err := h.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			continue
		}
		err := h.ReadUntil(10*time.Second, func(f http2.Frame) bool {
			return f.Header().StreamID == id && f.Header().Flags.Has(http2.FlagDataEndStream)
		})
		if err != nil {
			t.Fatalf("request %d, after a third of them were cancelled: %v", i, err)
		}
	}
}
