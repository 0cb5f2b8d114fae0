package edge

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// A client that half-closes its HTTP/1.1 connection after its request is
// taken as gone: net/http cancels the request at the read EOF, and a FIN
// cannot tell a half-close from a close. It gets no response at all, never
// the empty 200 net/http writes for a handler that wrote nothing.
func TestHalfClosedClientGetsNoInventedResponse(t *testing.T) {
	slow := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		io.WriteString(w, "the answer")
	}))
	n := startNode(t, nodeYAML("round_robin", slow))
	c, err := net.Dial("tcp", n.Addrs().HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || len(b) != 0 {
		t.Fatalf("a half-closed client got %q, %v; want the connection closed with no response", b, err)
	}
}
