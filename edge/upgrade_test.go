package edge

import (
	"bufio"
	"cmp"
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestH2CUpgradeIsNotTunnelled: a backend that switched to h2c would take
// the client's next requests straight off the tunnel, past the node's
// routes, limits and transforms (h2c smuggling). The backend here switches
// to what it is asked for (h2c, whether or not HTTP2-Settings came along),
// and to h2c when asked for nothing.
func TestH2CUpgradeIsNotTunnelled(t *testing.T) {
	for _, upgrade := range []string{"h2c", "H2C", "websocket, h2c", "h2c, websocket", "tls/1.2", ""} {
		t.Run(upgrade, func(t *testing.T) {
			be := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conn, rw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer conn.Close()
				rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + cmp.Or(r.Header.Get("Upgrade"), "h2c") + "\r\nConnection: Upgrade\r\n\r\n")
				rw.Flush()
				io.Copy(io.Discard, rw)
			}))
			n := startNode(t, nodeYAML("round_robin", be))
			conn, err := tls.Dial("tcp", n.Addrs().HTTPS, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			head := "GET / HTTP/1.1\r\nHost: x\r\n"
			if upgrade != "" {
				head += "Upgrade: " + upgrade + "\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n"
			}
			io.WriteString(conn, head+"\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode == http.StatusSwitchingProtocols {
				t.Fatalf("the node relayed the backend's switch to %s: the connection is now the backend's", resp.Header.Get("Upgrade"))
			}
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("a switch nobody may ask for got %s, want 502", resp.Status)
			}
		})
	}
}
