package edge

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// A backend that answers before it has read the request body (a 413, a
// 401), and then reads no more of it, has its answer reach the client at
// once, over every protocol: not a 504 when upstream_write runs out while
// the node pushes a body nobody reads.
func TestBackendsEarlyAnswerReachesTheClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(release); ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
				<-release
			})
		}
	})
	n := startNode(t, listenAny+`timeouts: {upstream_write: 1m}
services:
  api: {backends: [{url: "http://`+ln.Addr().String()+`"}]}
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`)
	const bound = 20 * time.Second // well inside upstream_write, with room for a loaded machine
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() { // a large upload, as fast as the node takes it
				buf := make([]byte, 32<<10)
				for {
					if _, err := pw.Write(buf); err != nil {
						return
					}
				}
			}()
			req, _ := http.NewRequest("POST", "https://"+n.Addrs().HTTPS+"/up", pr)
			pc.client.Timeout = bound
			start := time.Now()
			resp, err := pc.client.Do(req)
			if err != nil {
				t.Fatalf("no answer within %v: %v", bound, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || string(body) != "too large" {
				t.Fatalf("got %d %q, want the backend's 413", resp.StatusCode, body)
			}
			t.Logf("413 after %v", time.Since(start))
		})
	}
	waitFor(t, "in-flight back to zero", func() bool { return n.metrics.InFlight() == 0 })
}
