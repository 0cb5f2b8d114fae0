package edge

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// An upgraded connection (a WebSocket) closes once neither side has sent
// anything for timeouts.tunnel_idle, which frees the backend's connection
// too; one in which either side keeps speaking stays, however quiet the
// other is; a route may set its own bound.
func TestQuietTunnelsCloseAtTunnelIdle(t *testing.T) {
	var freed atomic.Int32 // quiet tunnels whose backend side the node closed
	be := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, rw, ok := acceptWebSocket(w)
		if !ok {
			return
		}
		defer conn.Close()
		switch r.URL.Path {
		case "/talks": // speaks every 300 ms for 3 s; hears nothing
			for range 10 {
				time.Sleep(300 * time.Millisecond)
				rw.WriteString("tick\n")
				rw.Flush()
			}
			rw.WriteString("done\n")
			rw.Flush()
			io.Copy(io.Discard, rw) // until the client goes
		case "/listens": // hears the client's lines, answers after 3 s
			time.AfterFunc(3*time.Second, func() { rw.WriteString("still\n"); rw.Flush() })
			io.Copy(io.Discard, rw)
		default: // never speaks
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.Copy(io.Discard, rw); err == nil {
				freed.Add(1) // the node closed it, before this side's deadline
			}
		}
	}))
	n := startNode(t, listenAny+`timeouts: {tunnel_idle: 1s}
services:
  ws: {backends: [{url: "`+be+`"}]}
routes:
  - {name: long, match: {path_prefix: /long}, service: ws, timeouts: {tunnel_idle: 1h}}
  - {name: ws, match: {path_prefix: /}, service: ws}
`)
	t.Run("quiet", func(t *testing.T) {
		c, br := dialWebSocket(t, n.Addrs().HTTPS, "/quiet", 0)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		start := time.Now()
		if _, err := br.ReadByte(); err == nil || isTimeout(err) {
			t.Fatalf("a tunnel quiet both ways: %v after %v, want closed by the node", err, time.Since(start))
		}
		waitFor(t, "the backend's side closed", func() bool { return freed.Load() == 1 })
		c.Close()
	})
	t.Run("backend talks", func(t *testing.T) {
		c, br := dialWebSocket(t, n.Addrs().HTTPS, "/talks", 0)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("a tunnel whose backend speaks while the client is quiet: %v", err)
			}
			if line == "done\n" {
				return
			}
		}
	})
	t.Run("client talks", func(t *testing.T) {
		c, br := dialWebSocket(t, n.Addrs().HTTPS, "/listens", 0)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		go func() {
			for range 12 {
				if _, err := io.WriteString(c, "hello\n"); err != nil {
					return
				}
				time.Sleep(300 * time.Millisecond)
			}
		}()
		if line, err := br.ReadString('\n'); line != "still\n" {
			t.Fatalf("a tunnel whose client speaks while the backend is quiet: %q, %v", line, err)
		}
	})
	t.Run("route's own bound", func(t *testing.T) {
		c, br := dialWebSocket(t, n.Addrs().HTTPS, "/long", 0)
		time.Sleep(2500 * time.Millisecond) // past the node's 1s
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := br.ReadByte(); !isTimeout(err) {
			t.Fatalf("a quiet tunnel on a route with tunnel_idle 1h: %v, want it open", err)
		}
	})
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
