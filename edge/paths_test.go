package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"perigee/edge/urlpath/corpus"
)

// targetEcho answers with its name and the request-target it received,
// byte for byte as it came off the wire.
// backendHits counts the requests every targetEcho served.
var backendHits atomic.Int64

func targetEcho(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backendHits.Add(1)
		io.WriteString(w, name+" "+r.RequestURI)
	})
}

func readPathCorpus(t *testing.T) []corpus.Path {
	t.Helper()
	cases, err := corpus.Paths("urlpath/testdata/corpus.txt")
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

// pathNode routes /private/ to one backend and the rest to another; each
// echoes the target it received.
func pathNode(t *testing.T) *testNode {
	return startNode(t, listenAny+`services:
  pub: {backends: [{url: "`+serveBackend(t, targetEcho("public"))+`"}]}
  priv: {backends: [{url: "`+serveBackend(t, targetEcho("private"))+`"}]}
routes:
  - {name: private, match: {path_prefix: /private/}, service: priv}
  - {name: public, match: {path_prefix: /}, service: pub}
`)
}

// rawH1 sends one request over its own TLS connection, the request-target
// exactly as given, and returns the status and body.
func rawH1(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%q: reading the answer: %v", raw, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// asIsRequest is a GET whose :path is target untouched: Go's clients send
// URL.Opaque verbatim, except one that starts with "//", which they would
// turn into an absolute URI; that one goes in Path, and holds no escapes.
func asIsRequest(t *testing.T, base, target string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, q, hasQ := strings.Cut(target, "?")
	if strings.HasPrefix(p, "//") {
		req.URL.Path = p
	} else {
		req.URL.Path, req.URL.Opaque = "", p
	}
	req.URL.RawQuery, req.URL.ForceQuery = q, hasQ && q == ""
	if got := req.URL.RequestURI(); got != target {
		t.Fatalf("request-target %q would be sent as %q", target, got)
	}
	return req
}

// checkPathAnswer holds the node to the corpus: a refused target gets 400
// and reaches no backend; any other reaches the backend its normal form
// routes to, as exactly that normal form.
func checkPathAnswer(t *testing.T, c corpus.Path, status int, body string) {
	t.Helper()
	if strings.HasPrefix(c.Answer, "reject:") {
		if status != http.StatusBadRequest || strings.HasPrefix(body, "public ") || strings.HasPrefix(body, "private ") {
			t.Errorf("%q: got %d %q, want 400 (%s) and no backend", c.Target, status, body, c.Answer)
		}
		return
	}
	want := "public " + c.Answer
	if strings.HasPrefix(c.Answer, "/private/") {
		want = "private " + c.Answer
	}
	if status != http.StatusOK || body != want {
		t.Errorf("%q: got %d %q, want 200 %q", c.Target, status, body, want)
	}
}

// Every target of the path corpus is routed on, and forwarded as, the same
// normal path, over HTTP/1.1, HTTP/2 and HTTP/3.
func TestPathCorpusRoutesAndForwardsTheNormalPath(t *testing.T) {
	cases := readPathCorpus(t)
	n := pathNode(t)
	t.Run("HTTP/1.1", func(t *testing.T) {
		for _, c := range cases {
			status, body := rawH1(t, n.Addrs().HTTPS, "GET "+c.Target+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			if strings.ContainsAny(c.Target, " \t") && status == http.StatusBadRequest {
				continue // a space ends the target: the listener's parser refuses the request line
			}
			checkPathAnswer(t, c, status, body)
		}
	})
	base := "https://" + n.Addrs().HTTPS
	for _, pc := range allClients(t)[1:] {
		t.Run(pc.name, func(t *testing.T) {
			for _, c := range cases {
				if !strings.HasPrefix(c.Target, "/") {
					continue // :path carries origin-form only; the scheme and authority are pseudo-headers
				}
				// Go's HTTP/2 server leaves a stream whose :path it cannot
				// parse unanswered: give refusals a short wait, and check by
				// the backends' count that nothing reached them.
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				if strings.HasPrefix(c.Answer, "reject:") {
					ctx, cancel = context.WithTimeout(t.Context(), 2*time.Second)
				}
				hits := backendHits.Load()
				resp, err := pc.client.Do(asIsRequest(t, base, c.Target).WithContext(ctx))
				if err != nil {
					cancel()
					if backendHits.Load() != hits || !strings.HasPrefix(c.Answer, "reject:") {
						t.Errorf("%q: %v, and a backend was reached or it was not to be refused", c.Target, err)
					}
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				cancel()
				checkPathAnswer(t, c, resp.StatusCode, string(b))
			}
		})
	}
}

// The dev config's /private/ route, guarded by the apikey transform, cannot
// be reached around the transform by spelling the path another way.
func TestAPIKeyRouteCannotBeBypassed(t *testing.T) {
	n := startNode(t, listenAny+`transforms:
  apikey: {module: "`+exampleModule(t, "apikey")+`", config: {keys: "demo-key\n"}, pool: 2, timeout: 10s}
services:
  sample: {backends: [{url: "`+serveBackend(t, targetEcho("sample"))+`"}]}
routes:
  - {name: private, match: {path_prefix: /private/}, service: sample, transforms: [apikey]}
  - {name: sample, match: {path_prefix: /}, service: sample}
`)
	tricks := []string{"/private/x", "//private/x", "/./private/x", "/x/../private/x", "/%2e%2e/private/x"}
	base := "https://" + n.Addrs().HTTPS
	for _, trick := range tricks {
		status, body := rawH1(t, n.Addrs().HTTPS, "GET "+trick+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if status != http.StatusUnauthorized {
			t.Errorf("HTTP/1.1 %s without a key: %d %q, want 401", trick, status, body)
		}
		status, body = rawH1(t, n.Addrs().HTTPS, "GET "+trick+" HTTP/1.1\r\nHost: x\r\nX-Api-Key: demo-key\r\nConnection: close\r\n\r\n")
		if status != http.StatusOK || body != "sample /private/x" {
			t.Errorf("HTTP/1.1 %s with the key: %d %q, want 200 \"sample /private/x\"", trick, status, body)
		}
		for _, pc := range allClients(t)[1:] {
			resp, err := pc.client.Do(asIsRequest(t, base, trick))
			if err != nil {
				t.Fatalf("%s %s: %v", pc.name, trick, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s without a key: %d %q, want 401", pc.name, trick, resp.StatusCode, b)
			}
		}
	}
}

// Headers the node sets for its backends (X-Perigee-*) are never the
// client's to send, with or without the geo section that sets them.
func TestClientCannotSendPerigeeHeaders(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, echoHeaders)))
	for _, pc := range allClients(t) {
		_, body := get(t, pc.client, "https://"+n.Addrs().HTTPS+"/", "X-Perigee-Country", "NZ", "x-perigee-anything", "1")
		if strings.Contains(strings.ToLower(body), "x-perigee") {
			t.Errorf("%s: a client's X-Perigee-* header reached the backend: %s", pc.name, body)
		}
	}
}
