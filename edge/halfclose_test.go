package edge

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// A client that half-closes its HTTP/1.1 connection after its request is
// taken as gone: net/http cancels the request at the read EOF, and a FIN
// cannot tell a half-close from a close. It gets no final response, never
// the empty 200 net/http writes for a handler that wrote none, not even
// when a 103 Early Hints went out first.
func TestHalfClosedClientGetsNoInventedResponse(t *testing.T) {
	for _, c := range []struct {
		name  string
		hints bool
	}{{"no answer yet", false}, {"an early hint", true}} {
		t.Run(c.name, func(t *testing.T) {
			slow := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if c.hints {
					w.Header().Set("Link", "</app.css>; rel=preload")
					w.WriteHeader(http.StatusEarlyHints)
					w.Header().Del("Link")
				}
				select {
				case <-time.After(5 * time.Second):
				case <-r.Context().Done():
				}
				io.WriteString(w, "the answer")
			}))
			n := startNode(t, nodeYAML("round_robin", slow))
			conn, err := net.Dial("tcp", n.Addrs().HTTP)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			io.WriteString(conn, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
			conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(conn)
			if c.hints { // the 103 is in before the client leaves
				if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusEarlyHints {
					t.Fatalf("%v %v, want the 103 first", resp, err)
				}
			}
			conn.(*net.TCPConn).CloseWrite()
			b, err := io.ReadAll(br)
			if err != nil || len(b) != 0 {
				t.Fatalf("a half-closed client got %q, %v; want the connection closed with no final response", b, err)
			}
		})
	}
}
