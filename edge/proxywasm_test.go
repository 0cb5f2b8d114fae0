package edge

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// buildProxyTest builds modules/proxytest, the raw-import proxy-wasm filter.
func buildProxyTest(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "proxytest.wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", out, "../modules/proxytest")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build proxytest: %v\n%s", err, b)
	}
	return out
}

func watModule(t *testing.T, src, dir string) string {
	t.Helper()
	wat2wasm := lookPath(t, "wat2wasm", "wabt")
	out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".wat")+".wasm")
	if b, err := exec.Command(wat2wasm, src, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	return out
}

// A route whose chain is an http-wasm guest then a proxy-wasm filter, over
// HTTP/1.1, HTTP/2 and HTTP/3: both stamp the request, the filter's
// dispatched call goes through the node's pool to another service, and its
// paused body continues rewritten.
func TestMixedABIChainThroughANode(t *testing.T) {
	dir := t.TempDir()
	hw := watModule(t, "../runtime/wasm/testdata/probe.wat", dir)
	pw := buildProxyTest(t, dir)
	api := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // before writing: HTTP/1.1 servers stop reading then
		for _, k := range []string{"X-Chain", "X-Pw-Config", "X-Pw-Props", "X-Auth"} {
			w.Header().Set("Seen-"+k, r.Header.Get(k))
		}
		w.Write(body)
	}))
	authz := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/check" || r.Header.Get("X-Asked-By") != "proxytest" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		io.WriteString(w, "user-7")
	}))
	n := startNode(t, listenAny+`node: {id: fra-1, region: eu}
transforms:
  hw: {module: "`+hw+`", config: hw}
  pw: {module: "`+pw+`", abi: proxy-wasm, configuration: edge-config, clusters: {authz: auth}, timeout: 5s}
services:
  api: {backends: [{url: "`+api+`"}]}
  auth: {backends: [{url: "`+authz+`"}]}
routes:
  - {match: {path_prefix: /}, service: api, transforms: [hw, pw]}
`)
	base := "https://" + n.Addrs().HTTPS
	protoName := map[int]string{1: "HTTP/1.1", 2: "HTTP/2", 3: "HTTP/3"}
	for _, c := range allClients(t) {
		t.Run(c.name, func(t *testing.T) {
			resp, _ := get(t, c.client, base+"/mixed")
			want := map[string]string{
				"Seen-X-Chain":     "hw",
				"Seen-X-Pw-Config": "edge-config",
				"Seen-X-Pw-Props":  "pw|GET|" + protoName[c.proto] + "|fra-1|eu",
				"X-Pw-Status":      "200",
				"X-Chain-Resp":     "hw",
			}
			for k, v := range want {
				if got := resp.Header.Get(k); got != v || resp.ProtoMajor != c.proto {
					t.Errorf("%s %s = %q, want %q", resp.Proto, k, got, v)
				}
			}
			if resp, _ := get(t, c.client, base+"/auth"); resp.StatusCode != 200 || resp.Header.Get("Seen-X-Auth") != "user-7" {
				t.Errorf("/auth: %d, upstream saw x-auth %q; want 200 user-7 from the dispatched call", resp.StatusCode, resp.Header.Get("Seen-X-Auth"))
			}
			post, err := c.client.Post(base+"/pause-body", "text/plain", strings.NewReader(strings.Repeat("b", 100000)))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(post.Body)
			post.Body.Close()
			if want := "BODY(100000):" + strings.Repeat("b", 100000); string(body) != want {
				t.Errorf("/pause-body: %d, %d bytes %.30q..., want the whole body behind the prefix", post.StatusCode, len(body), body)
			}
		})
	}
}

// A filter importing what the host does not offer is refused at load time,
// naming the import and the transform's line.
func TestUnsupportedImportNamesImportAndLine(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "grpc.wat")
	writeFile(t, src, `(module
  (import "env" "proxy_grpc_call" (func (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_context_create") (param i32 i32)))`)
	mod := watModule(t, src, dir)
	path := filepath.Join(dir, "node.yaml")
	yaml := nodeYAML("round_robin", "http://127.0.0.1:9") + "transforms:\n"
	line := strings.Count(yaml, "\n") + 1
	writeFile(t, path, yaml+"  grpc: {module: \""+mod+"\"}\n")
	_, err := newFromFile(path)
	if err == nil {
		t.Fatal("a filter importing proxy_grpc_call loaded")
	}
	for _, want := range []string{fmt.Sprintf("node.yaml:%d:", line), "env.proxy_grpc_call, which the host does not offer"} {
		if !contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

// A response past max_buffer through a transform that holds responses is
// 502 through the node's real proxy too (which aborts the copy when the
// held writer refuses a write).
func TestHeldResponsePastMaxBufferThroughANode(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "hold.wat")
	writeFile(t, src, `(module
  (import "http_handler" "enable_features" (func $enable (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle_request") (result i64) (drop (call $enable (i32.const 2))) (i64.const 1))
  (func (export "handle_response") (param i32 i32)))`)
	mod := watModule(t, src, dir)
	chunk := make([]byte, 32<<10)
	api := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 256 { // 8 MiB
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	n := startNode(t, listenAny+"services:\n  api: {backends: [{url: \""+api+"\"}]}\n"+
		"transforms:\n  hold: {module: \""+mod+"\", max_buffer: 1MiB}\n"+
		"routes:\n  - {match: {path_prefix: /}, service: api, transforms: [hold]}\n")
	for _, c := range allClients(t) {
		resp, body := get(t, c.client, "https://"+n.Addrs().HTTPS+"/held")
		if resp.StatusCode != http.StatusBadGateway || !contains(body, "max_buffer") {
			t.Errorf("%s: %d %.80q, want 502 naming max_buffer", c.name, resp.StatusCode, body)
		}
	}
}

// The root context through a node: a filter's ticks dispatch calls through
// the node's pools from the moment it loads (before the node serves), and
// another's tick resumes a postponed request over HTTP/1.1, HTTP/2 and
// HTTP/3.
func TestProxyWasmRootContextThroughANode(t *testing.T) {
	dir := t.TempDir()
	pw := buildProxyTest(t, dir)
	var ticked atomic.Int64
	authz := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/tick" {
			ticked.Add(1)
		}
	}))
	api := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Seen-X-Resumed", r.Header.Get("X-Resumed"))
	}))
	n := startNode(t, listenAny+`transforms:
  caller: {module: "`+pw+`", abi: proxy-wasm, configuration: tick-call, clusters: {authz: auth}, pool: 1}
  postpone: {module: "`+pw+`", abi: proxy-wasm, configuration: tick, timeout: 5s}
services:
  api: {backends: [{url: "`+api+`"}]}
  auth: {backends: [{url: "`+authz+`"}]}
routes:
  - {match: {path_prefix: /}, service: api, transforms: [postpone]}
`)
	for _, c := range allClients(t) {
		resp, _ := get(t, c.client, "https://"+n.Addrs().HTTPS+"/postpone")
		if resp.StatusCode != 200 || resp.Header.Get("Seen-X-Resumed") != "tick" {
			t.Errorf("%s /postpone: %d, upstream saw x-resumed %q; want 200 and tick", c.name, resp.StatusCode, resp.Header.Get("Seen-X-Resumed"))
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for ticked.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if ticked.Load() < 3 {
		t.Errorf("authz got %d calls from the ticks in 20s, want some", ticked.Load())
	}
}
