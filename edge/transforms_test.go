package edge

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/http-wasm/http-wasm-host-go/tck"
)

// TestTCKThroughANode runs the upstream http-wasm conformance kit against a
// whole node: its guest as a route's transform, its backend behind the proxy.
func TestTCKThroughANode(t *testing.T) {
	module := filepath.Join(t.TempDir(), "tck.wasm")
	if err := os.WriteFile(module, tck.GuestWASM, 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := listenAny + `transforms:
  tck: {module: "` + module + `", pool: 2, timeout: 10s}   # the xlarge body case is slow under -race
services:
  tck: {backends: [{url: "` + serveBackend(t, tck.BackendHandler()) + `"}]}
routes:
  - {match: {path_prefix: /}, service: tck, transforms: [tck]}
`
	n := startNode(t, yaml)
	base := "https://" + n.Addrs().HTTPS
	t.Run("HTTP/1.1", func(t *testing.T) { tck.Run(t, h1Client(), base) })
	t.Run("HTTP/3", func(t *testing.T) { tck.Run(t, h3Client(t), base) })
	// The kit's cases run in parallel, after this function returns.
	t.Cleanup(func() { transformSeries(t, n) })
}

func transformSeries(t *testing.T, n *testNode) {
	_, body := get(t, h1Client(), "http://"+n.Addrs().Admin+"/metrics")
	for _, want := range []string{`perigee_transform_calls_total{transform="tck"}`, `perigee_transform_errors_total{kind="trap",transform="tck"} 0`,
		`perigee_transform_guest_seconds_count{transform="tck"}`, `perigee_transform_guest_seconds_bucket{transform="tck",le="0.001024"}`, `proto="h3"`,
		`perigee_http3_connections_total `, `perigee_tls_handshakes_total{proto="h3"}`} {
		if !contains(body, want) {
			t.Errorf("GET /metrics lacks %s", want)
		}
	}
}

func TestBadTransformIsRefusedAndReloadKeepsTheOldChain(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.wasm")
	os.WriteFile(good, tck.GuestWASM, 0o600)
	bad := filepath.Join(dir, "bad.wasm")
	os.WriteFile(bad, []byte("not wasm at all"), 0o600)
	conf := func(module string) string {
		return nodeYAML("round_robin", serveBackend(t, tck.BackendHandler())) + "transforms:\n  t: {module: \"" + module + "\"}\n"
	}
	n := startNode(t, conf(good))
	n.rewrite(conf(bad))
	err := n.Reload()
	if err == nil {
		t.Fatal("a module that is not Wasm was accepted")
	}
	for _, want := range []string{"node.yaml:", "bad.wasm"} {
		if !contains(err.Error(), want) {
			t.Fatalf("error %q does not name %q", err, want)
		}
	}
	n.rewrite(conf(filepath.Join(dir, "missing.wasm")))
	if err := n.Reload(); err == nil || !contains(err.Error(), "missing.wasm") {
		t.Fatalf("missing module: %v", err)
	}
	if resp, _ := get(t, h1Client(), "https://"+n.Addrs().HTTPS+"/"); resp.StatusCode == 0 {
		t.Fatal("node stopped serving")
	}
	resp, err := http.Get("http://" + n.Addrs().Admin + "/transforms")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /transforms: %v", err)
	}
	resp.Body.Close()
}
