package edge

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"perigee/runtime/wasm"
)

var (
	rewriteOnce sync.Once
	rewriteWasm string
	rewriteErr  error
)

// rewriteModule builds the example rewrite transform once per test binary.
func rewriteModule(t *testing.T) string {
	t.Helper()
	rewriteOnce.Do(func() {
		dir, err := os.MkdirTemp("", "perigee-edge-rewrite")
		if err != nil {
			rewriteErr = err
			return
		}
		rewriteWasm = filepath.Join(dir, "rewrite.wasm")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		rewriteErr = wasm.Build(ctx, "../modules/rewrite", rewriteWasm)
	})
	if rewriteErr != nil {
		t.Fatal(rewriteErr)
	}
	return rewriteWasm
}

// A path a transform rewrote (http-wasm set_uri) goes through the same
// normaliser as the client's before it is forwarded: dot segments and
// repeated slashes are resolved, and a rewrite to a path the node refuses
// (an encoded slash) is the operator's bug, a 500 naming the route's
// transforms, which reaches no backend.
func TestRewrittenPathIsNormalisedBeforeItIsForwarded(t *testing.T) {
	n := startNode(t, listenAny+`transforms:
  rewrite:
    module: "`+rewriteModule(t)+`"
    config: [{from: /a/, to: /x/../private/}, {from: /b/, to: "/p%2Fq/"}, {from: /c/, to: "/p//q/./"}, {from: /d/, to: "/%7Euser/%e2%82%ac/"}]
services:
  echo: {backends: [{url: "`+serveBackend(t, targetEcho("echo"))+`"}]}
routes:
  - {name: rewritten, match: {path_prefix: /}, service: echo, transforms: [rewrite]}
`)
	base := "https://" + n.Addrs().HTTPS
	for _, pc := range allClients(t) {
		for target, want := range map[string]string{
			"/a/secret?k=v": "200 echo /private/secret?k=v",
			"/c/z":          "200 echo /p/q/z",
			"/d/z":          "200 echo /~user/%E2%82%AC/z",
			"/plain":        "200 echo /plain",
		} {
			resp, body := get(t, pc.client, base+target)
			if got := fmt.Sprint(resp.StatusCode, " ", body); got != want {
				t.Errorf("%s %s: %q, want %q", pc.name, target, got, want)
			}
		}
		before := backendHits.Load()
		resp, body := get(t, pc.client, base+"/b/z")
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, "rewrite") || !strings.Contains(body, "encoded slash") {
			t.Errorf("%s rewrite to an encoded slash: %d %q, want 500 naming the transform", pc.name, resp.StatusCode, body)
		}
		if backendHits.Load() != before {
			t.Errorf("%s: a refused rewrite reached the backend", pc.name)
		}
	}
}

func TestIsNormalTargetAgreesWithNormalizeTarget(t *testing.T) {
	for target, want := range map[string]bool{
		"/a": true, "/a?b=c": true, "/a?": false, "/a/../b": false, "//a": false,
		"/%7e": false, "/%E2%82%AC": true, "/%e2%82%ac": false, "/a%2Fb": false, "/?": false,
	} {
		if got := isNormalTarget(target); got != want {
			t.Errorf("isNormalTarget(%q) = %v, want %v", target, got, want)
		}
	}
}
