package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"perigee/edge/config"
	"perigee/edge/samplebackend"
	"perigee/runtime/wasm"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// backend starts a real sample backend on loopback and returns its URL.
func backend(t *testing.T, name string) string {
	t.Helper()
	return serveBackend(t, samplebackend.Handler(samplebackend.Options{Name: name, Size: 64}))
}

func serveBackend(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// socketBackend is a loopback backend written against the socket, so
// that it can answer as net/http's server would not: serve runs for each
// connection, which closes when it returns. It returns the address.
func socketBackend(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	})
	return ln.Addr().String()
}

// deadAddr is a loopback address nothing listens on.
//
// It is on 127.0.0.2: a port just freed on 127.0.0.1 may be the next
// node's own listener (as one was, in a CI run), which made the "dead"
// backend the node itself. Nothing in these tests listens on 127.0.0.2.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// testNode writes yaml to a file and starts a node from it on free ports.
type testNode struct {
	*Node
	path string
	t    testing.TB
}

func startNode(t testing.TB, yaml string) *testNode {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node.yaml")
	writeFile(t, path, yaml)
	n, err := newFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	return &testNode{Node: n, path: path, t: t}
}

// rewrite replaces the node's config file, for reload tests.
func (n *testNode) rewrite(yaml string) {
	if err := os.WriteFile(n.path, []byte(yaml), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

const listenAny = `listen: {https: "127.0.0.1:0", http: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {enabled: false}
`

// nodeYAML is a node with one service "api" over the given backend URLs.
func nodeYAML(balancer string, backends ...string) string {
	var b strings.Builder
	b.WriteString(listenAny)
	fmt.Fprintf(&b, "services:\n  api:\n    balancer: %s\n    backends:\n", balancer)
	for _, u := range backends {
		fmt.Fprintf(&b, "      - {url: %q}\n", u)
	}
	b.WriteString("routes:\n  - {name: api, match: {path_prefix: /}, service: api}\n")
	return b.String()
}

// insecure trusts the node's dev certificate. Each client needs its own
// copy: HTTP/2 transports edit the NextProtos of the config they are given.
func insecure() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

// clients for each protocol the node speaks.
func h1Client() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: insecure(), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}, Timeout: 30 * time.Second}
}

func h2Client() *http.Client {
	tr := &http.Transport{TLSClientConfig: insecure(), ForceAttemptHTTP2: true}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func h3Client(t *testing.T) *http.Client {
	tr := &http3.Transport{TLSClientConfig: insecure()}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

type protoClient struct {
	name   string
	client *http.Client
	proto  int // expected ProtoMajor
}

func allClients(t *testing.T) []protoClient {
	return []protoClient{{"HTTP/1.1", h1Client(), 1}, {"HTTP/2", h2Client(), 2}, {"HTTP/3", h3Client(t), 3}}
}

func get(t *testing.T, c *http.Client, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	return resp, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newFromFile(path string) (*Node, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	n, err := New(cfg, Options{Log: quiet, Load: func() (*config.Config, error) { return config.Load(path) }})
	if err != nil {
		return nil, err
	}
	if err := n.Start(); err != nil {
		return nil, err
	}
	return n, nil
}

var examples = struct {
	sync.Mutex
	dir   string            // made on the first build, removed by TestMain
	built map[string]string // name -> .wasm path
}{built: map[string]string{}}

// removeExamples deletes what exampleModule built: a few MB per module,
// which would otherwise stay in the temp dir after every run.
func removeExamples() {
	examples.Lock()
	defer examples.Unlock()
	if examples.dir != "" {
		os.RemoveAll(examples.dir)
	}
}

// exampleModule builds modules/<name>, one of the example transforms, once
// per test binary and returns its .wasm path.
func exampleModule(t *testing.T, name string) string {
	t.Helper()
	examples.Lock()
	defer examples.Unlock()
	if path, ok := examples.built[name]; ok {
		return path
	}
	if examples.dir == "" {
		dir, err := os.MkdirTemp("", "perigee-edge-modules")
		if err != nil {
			t.Fatal(err)
		}
		examples.dir = dir
	}
	path := filepath.Join(examples.dir, name+".wasm")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := wasm.Build(ctx, "../modules/"+name, path); err != nil {
		t.Fatal(err)
	}
	examples.built[name] = path
	return path
}

// acceptWebSocket is a backend's side of an upgrade: it takes the
// connection and answers 101; ok is false if it could not take it.
func acceptWebSocket(w http.ResponseWriter) (conn net.Conn, rw *bufio.ReadWriter, ok bool) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, false
	}
	rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	rw.Flush()
	return conn, rw, true
}

// dialWebSocket opens a TLS connection to addr (its read buffer readBuf
// bytes, if not 0), asks for a WebSocket at path and reads the 101; the
// connection is closed when t ends.
func dialWebSocket(t *testing.T, addr, path string, readBuf int) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if readBuf > 0 {
		raw.(*net.TCPConn).SetReadBuffer(readBuf)
	}
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	c.SetReadDeadline(time.Time{})
	return c, br
}
