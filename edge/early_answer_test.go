package edge

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A backend that answers before it has read the request body (a 413, a
// 401), and then reads no more of it, has its answer reach the client at
// once, over every protocol: not a 504 when upstream_write runs out while
// the node pushes a body nobody reads.
func TestBackendsEarlyAnswerReachesTheClient(t *testing.T) {
	n := startNode(t, listenAny+`timeouts: {upstream_write: 1m}
services:
  api: {backends: [{url: "http://`+earlyAnswerer(t)+`"}]}
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

// earlyAnswerer is an HTTP/1.1 backend that answers 413 as soon as it has
// read a request's head, and then reads nothing (net/http's server reads a
// body before it answers), and returns its address.
func earlyAnswerer(t *testing.T) string {
	release := make(chan struct{})
	addr := socketBackend(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
		<-release
	})
	t.Cleanup(func() { close(release) }) // before the backend's: it waits for its connections
	return addr
}

// A backend's early answer reaches a client that paused its upload at
// once too, over every upstream protocol, not when client_body ends the
// wait for the client's next bytes. Over HTTP/1.1 it waited for that:
// before it writes an answer's head, net/http reads what is left of the
// body, and that waits behind the read the transport has pending on it.
func TestBackendsEarlyAnswerReachesAStalledClient(t *testing.T) {
	answer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		io.WriteString(w, "too large")
	})
	h2c := &http.Server{Handler: answer, Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go h2c.Serve(ln)
	t.Cleanup(func() { h2c.Close() })
	n := startNode(t, listenAny+`timeouts: {client_body: 10m}
services:
  h1: {backends: [{url: "http://`+earlyAnswerer(t)+`"}]}
  h2c: {protocol: h2c, backends: [{url: "http://`+ln.Addr().String()+`"}]}
routes:
  - {name: h1, match: {path_prefix: /h1}, service: h1}
  - {name: h2c, match: {path_prefix: /h2c}, service: h2c}
`)
	const bound = 30 * time.Second // far inside client_body
	for _, svc := range []string{"h1", "h2c"} {
		// net/http's HTTP/1.1 client waits for its body's writer before it
		// returns an answer, so this client writes by hand.
		t.Run("HTTP/1.1 to "+svc, func(t *testing.T) {
			c, err := dialTLSFrom("127.0.0.1", n.Addrs().HTTPS)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "POST /"+svc+" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n"+strings.Repeat("a", 1000)+"\r\n")
			c.SetReadDeadline(time.Now().Add(bound))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer within %v: %v", bound, err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || string(body) != "too large" {
				t.Fatalf("got %d %q (%v), want the backend's 413", resp.StatusCode, body, err)
			}
		})
		for _, pc := range allClients(t)[1:] {
			t.Run(pc.name+" to "+svc, func(t *testing.T) {
				pr, pw := io.Pipe()
				defer pw.Close()
				go pw.Write(make([]byte, 1000)) // then the client sends no more
				req, _ := http.NewRequest("POST", "https://"+n.Addrs().HTTPS+"/"+svc, pr)
				pc.client.Timeout = bound
				resp, err := pc.client.Do(req)
				if err != nil {
					t.Fatalf("no answer within %v: %v", bound, err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || string(body) != "too large" {
					t.Fatalf("got %d %q (%v), want the backend's 413", resp.StatusCode, body, err)
				}
			})
		}
	}
}
