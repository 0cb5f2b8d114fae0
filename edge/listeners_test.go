package edge

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"perigee/h3serve/h3test"
)

// A client that opens a TCP connection and sends the start of what it
// owes (half a ClientHello, half a request head), then nothing, is cut at
// timeouts.read_header on every TCP listener, though timeouts.idle is far
// longer: without it each would hold a connection, a goroutine and its
// buffers for as long as it liked (slowloris).
func TestEveryTCPListenerCutsASlowClient(t *testing.T) {
	const readHeader = time.Second
	n := startNode(t, "timeouts: {idle: 5m, read_header: 1s}\n"+nodeYAML("round_robin", deadAddr(t)))
	head := "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a"
	for _, c := range []struct{ name, addr, send string }{
		{"https, half a ClientHello", n.Addrs().HTTPS, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"},
		{"https, nothing", n.Addrs().HTTPS, ""},
		{"http, half a head", n.Addrs().HTTP, head},
		{"admin, half a head", n.Addrs().Admin, head},
	} {
		t.Run(c.name, func(t *testing.T) {
			cutAt(t, c.addr, c.send, 20*readHeader) // room for a loaded machine
		})
	}
}

// cutAt sends send on a new connection to addr and fails t unless the
// server closes the connection within bound.
func cutAt(t *testing.T, addr, send string, bound time.Duration) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, send); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	conn.SetReadDeadline(start.Add(bound))
	_, err = io.Copy(io.Discard, conn) // a SETTINGS frame or an error page may come first
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the connection is still open after %v", bound)
	}
	t.Logf("closed after %v", time.Since(start).Round(10*time.Millisecond))
}

// The admin listener's parser reads no more header than the traffic
// listeners' do (limits.max_header_bytes, and net/http's slack): it read
// up to net/http's default of 1 MiB a request, 16 times as much, on a
// listener that holds as many connections.
func TestAdminListenerBoundsHeaders(t *testing.T) {
	n := startNode(t, "limits: {max_header_bytes: 8KiB}\n"+nodeYAML("round_robin", deadAddr(t)))
	req, _ := http.NewRequest(http.MethodGet, "http://"+n.Addrs().Admin+"/status", nil)
	req.Host = "127.0.0.1"
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB of headers on the admin listener: %s, want 431", resp.Status)
	}
}

// The node takes no 0-RTT data over HTTP/3: a request in it, a POST say,
// could be replayed by anyone who captured it, and the node would forward
// each copy to a backend.
func TestNodeTakesNo0RTT(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", deadAddr(t)))
	if h3test.Used0RTT(t, h3test.Client(t, "127.0.0.1"), n.Addrs().HTTPS) {
		t.Fatal("the node took 0-RTT data")
	}
}
