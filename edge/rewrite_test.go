package edge

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// A path a transform rewrote (http-wasm set_uri) goes through the same
// normaliser as the client's before it is forwarded: dot segments and
// repeated slashes are resolved, and a rewrite to a path the node refuses
// (an encoded slash) is the operator's bug, a 500 naming the route's
// transforms, which reaches no backend.
func TestRewrittenPathIsNormalisedBeforeItIsForwarded(t *testing.T) {
	n := startNode(t, listenAny+`transforms:
  rewrite:
    module: "`+exampleModule(t, "rewrite")+`"
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

// normalizeTarget keeps a normal target's string rather than rebuilding
// it from r.URL: for every target of the path corpus, with and without a
// query, the request's target is what r.URL spells and the corpus answers.
func TestNormalizeTargetSpellsWhatURLSpells(t *testing.T) {
	for _, c := range readPathCorpus(t) {
		for _, query := range []string{"", "?k=v"} {
			target, answer := c.Target, c.Answer
			if !strings.HasPrefix(answer, "reject:") && !strings.Contains(target, "?") && !strings.Contains(target, "#") {
				target, answer = target+query, answer+query
			}
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
			if err != nil {
				continue // net/http refuses it before the node sees it
			}
			if err := normalizeTarget(r); err != nil {
				if !strings.HasPrefix(answer, "reject:") {
					t.Errorf("%q: %v, want %q", target, err, answer)
				}
				continue
			}
			if r.RequestURI != answer || r.RequestURI != r.URL.RequestURI() {
				t.Errorf("%q: target %q, URL %q, want %q", target, r.RequestURI, r.URL.RequestURI(), answer)
			}
		}
	}
}
