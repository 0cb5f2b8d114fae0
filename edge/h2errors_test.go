package edge

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"perigee/h2test"
)

// A client's HTTP/2 protocol errors are counted by kind, so that a client
// that sends malformed frames (a scan, a flood, a broken client) shows in
// the node's metrics, not only in its debug log.
func TestHTTP2ErrorsAreCounted(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", backend(t, "b1")))
	h := h2test.Dial(t, n.Addrs().HTTPS)
	h.AllowIllegalWrites = true
	if err := h.WriteData(0, false, []byte("x")); err != nil { // DATA on stream 0: a connection error
		t.Fatal(err)
	}
	if err := h.ReadUntil(10*time.Second, func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }); err != nil {
		t.Fatalf("no GOAWAY for DATA on stream 0: %v", err)
	}
	const want = `perigee_http2_errors_total{kind="frame_data_stream_0"} 1`
	c := h1Client()
	waitFor(t, "the error counted", func() bool {
		_, metrics := get(t, c, "http://"+n.Addrs().Admin+"/metrics")
		return strings.Contains(metrics, want)
	})
}
