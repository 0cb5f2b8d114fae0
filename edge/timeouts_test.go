package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"perigee/edge/config"
	"perigee/logtest"
)

// A client that promises a body and stops sending gets 408 within its
// route's client_body timeout, over every protocol, and the backend is
// freed; the node's own (longer) default does not apply to that route.
func TestSlowClientBodyGets408(t *testing.T) {
	reached := make(chan struct{}, 8)
	n := startNode(t, listenAny+`timeouts: {client_body: 1m}
services:
  api: {backends: [{url: "`+serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached <- struct{}{}
		io.Copy(io.Discard, r.Body)
	}))+`"}]}
routes:
  - {name: api, match: {path_prefix: /}, service: api, timeouts: {client_body: 500ms}}
`)
	const bound = 10 * time.Second // 500ms, with room for a loaded machine
	t.Run("HTTP/1.1", func(t *testing.T) {
		conn, err := tls.Dial("tcp", n.Addrs().HTTPS, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		io.WriteString(conn, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
		conn.SetReadDeadline(time.Now().Add(bound))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer within %v: %v", bound, err)
		}
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("status %d, want 408", resp.StatusCode)
		}
		t.Logf("408 after %v", time.Since(start))
	})
	for _, pc := range allClients(t)[1:] {
		t.Run(pc.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			go pw.Write([]byte("x"))
			req, _ := http.NewRequest("POST", "https://"+n.Addrs().HTTPS+"/up", pr)
			req.ContentLength = 100
			pc.client.Timeout = bound
			resp, err := pc.client.Do(req)
			if err != nil {
				t.Fatalf("no answer within %v: %v", bound, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Fatalf("status %d, want 408", resp.StatusCode)
			}
		})
	}
	waitFor(t, "in-flight back to zero", func() bool { return n.metrics.InFlight() == 0 })
	if h := len(n.state.Load().services["api"].Healthy()); h != 1 {
		t.Fatal("a slow client counted against the backend")
	}
}

// A backend that stalls is cut at its route's timeouts: before the head
// the client gets 504; mid-body the stream is cut, and the backend's
// connection is closed at once.
func TestStalledBackendIsCut(t *testing.T) {
	gone := make(chan struct{}, 8)
	stall := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/mid" {
			w.Header().Set("Content-Length", "1000")
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done() // the node closed the connection
		gone <- struct{}{}
	}))
	n := startNode(t, listenAny+`timeouts: {response_header: 1m, upstream_read: 1m}
services:
  api: {backends: [{url: "`+stall+`"}]}
routes:
  - {name: api, match: {path_prefix: /}, service: api, timeouts: {response_header: 500ms, upstream_read: 500ms}}
`)
	const bound = 10 * time.Second
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			pc.client.Timeout = bound
			resp, err := pc.client.Get("https://" + n.Addrs().HTTPS + "/head")
			if err != nil {
				t.Fatalf("no answer within %v: %v", bound, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(b), "timed out") {
				t.Fatalf("stall before the head: %d %s, want 504", resp.StatusCode, b)
			}
			waitForChan(t, gone, "the backend's connection closed after the 504")

			// The head may still sit in the node's write buffer: the cut
			// comes before it, or mid-body; never a whole answer.
			resp, err = pc.client.Get("https://" + n.Addrs().HTTPS + "/mid")
			if err == nil {
				b, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					t.Fatalf("stall mid-body: read %q and no error; want the stream cut", b)
				}
			}
			waitForChan(t, gone, "the backend's connection closed after the cut")
		})
	}
}

func waitForChan(t *testing.T, c chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting: %s", what)
	}
}

// SIGTERM's drain ends at timeouts.drain even while a WebSocket is open:
// the upgraded connection is closed then, and the node stops.
func TestDrainClosesWebSocketsAtItsDeadline(t *testing.T) {
	ws := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, rw, ok := acceptWebSocket(w)
		if !ok {
			return
		}
		defer conn.Close()
		io.Copy(io.Discard, rw) // a client that never leaves
	}))
	n := startNode(t, nodeYAML("round_robin", ws))
	conn, br := dialWebSocket(t, n.Addrs().HTTPS, "/ws", 0)
	const drain, bound = 500 * time.Millisecond, 20 * time.Second
	ctx, cancel := context.WithTimeout(t.Context(), drain)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Shutdown(ctx) }()
	select {
	case <-done:
	case <-time.After(bound):
		t.Fatalf("shutdown with a WebSocket open still running %v after a drain of %v", bound, drain)
	}
	conn.SetReadDeadline(time.Now().Add(bound))
	if _, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the WebSocket is still open after shutdown: %v", err)
	}
}

// A 502 or 504 says in the access log why the backend failed, and how long
// it took, as nginx's error log does.
func TestAccessLogSaysWhyTheUpstreamFailed(t *testing.T) {
	closing := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close() // no answer at all
	}))
	stalling := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	yaml := listenAny + `services:
  dead: {backends: [{url: "` + deadAddr(t) + `"}]}
  closing: {backends: [{url: "` + closing + `"}]}
  stalling: {backends: [{url: "` + stalling + `"}]}
routes:
  - {match: {path_prefix: /dead}, service: dead}
  - {match: {path_prefix: /closing}, service: closing}
  - {match: {path_prefix: /stalling}, service: stalling, timeouts: {response_header: 300ms}}
`
	yaml = strings.Replace(yaml, "access_log: {enabled: false}", "access_log: {enabled: true}", 1)
	path := filepath.Join(t.TempDir(), "node.yaml")
	writeFile(t, path, yaml)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs logtest.Buffer
	n, err := New(cfg, Options{Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	for path, want := range map[string]struct {
		status int
		class  string
	}{"/dead": {502, "connect_refused"}, "/closing": {502, "eof"}, "/stalling": {504, "timeout"}} {
		resp, _ := get(t, h1Client(), "https://"+n.Addrs().HTTPS+path)
		if resp.StatusCode != want.status {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want.status)
		}
		id := resp.Header.Get("X-Request-Id")
		var rec struct {
			Path          string  `json:"path"`
			Status        int     `json:"status"`
			UpstreamError string  `json:"upstream_error"`
			UpstreamMS    float64 `json:"upstream_ms"`
		}
		waitFor(t, "the access log line of "+path, func() bool {
			for line := range strings.SplitSeq(logs.String(), "\n") {
				if strings.Contains(line, `"request_id":"`+id+`"`) {
					return json.Unmarshal([]byte(line), &rec) == nil
				}
			}
			return false
		})
		if rec.UpstreamError != want.class || rec.Status != want.status {
			t.Errorf("%s: logged status %d upstream_error %q, want %d %q", path, rec.Status, rec.UpstreamError, want.status, want.class)
		}
		if path == "/stalling" && rec.UpstreamMS < 300 {
			t.Errorf("%s: upstream_ms %v, want the 300ms it waited at least", path, rec.UpstreamMS)
		}
	}
}

// A request the node answers itself (no route, too large, refused by a
// limit), or a route's transform answers without reading its body (the
// apikey transform's 401), has a body nobody reads. Before it writes the answer, net/http
// reads and drops up to 256 KiB of that body to keep the connection,
// with no deadline: a client that declared a body and sent none of it
// got no answer and held the connection as long as it liked. That read is
// bounded by timeouts.client_body: the answer comes, and the connection
// closes.
func TestUnreadBodyOfARefusedRequestIsBounded(t *testing.T) {
	n := startNode(t, listenAny+`timeouts: {client_body: 1s}
limits: {max_body_bytes: 1000}
transforms:
  apikey: {module: "`+exampleModule(t, "apikey")+`", config: {keys: "demo-key\n"}}
services:
  api: {backends: [{url: "`+backend(t, "a")+`"}]}
routes:
  - {name: api, match: {path_prefix: /api/}, service: api}
  - {name: private, match: {path_prefix: /private/}, service: api, transforms: [apikey]}
`)
	const bound = 10 * time.Second // 1s, with room for a loaded machine
	for path, want := range map[string]int{"/nope": http.StatusNotFound, "/api/x?big": http.StatusRequestEntityTooLarge, "/api/%2f": http.StatusBadRequest, "/private/x": http.StatusUnauthorized} {
		cl := "100000"
		if want != http.StatusRequestEntityTooLarge {
			cl = "900"
		}
		conn, err := tls.Dial("tcp", n.Addrs().HTTPS, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Length: "+cl+"\r\n\r\nx")
		conn.SetReadDeadline(time.Now().Add(bound))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Errorf("POST %s: no answer within %v: %v", path, bound, err)
			conn.Close()
			continue
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != want {
			t.Errorf("POST %s: %d, want %d", path, resp.StatusCode, want)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("POST %s: after the answer: %v, want the connection closed", path, err)
		}
		conn.Close()
	}
}
