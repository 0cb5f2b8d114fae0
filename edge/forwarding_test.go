package edge

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// spoofedForwarding is what a hostile client writes to name its own
// address, scheme and host to the backend.
var spoofedForwarding = []string{
	"X-Forwarded-For", "6.6.6.6",
	"X-Real-Ip", "6.6.6.6",
	"True-Client-Ip", "6.6.6.6",
	"X-Client-Ip", "6.6.6.6",
	"Forwarded", "for=6.6.6.6;proto=http;host=evil.example",
	"X-Forwarded-Proto", "http",
	"X-Forwarded-Host", "evil.example",
	"X-Forwarded-Port", "80",
	"X-Forwarded-Ssl", "off",
	"X_Forwarded_For", "6.6.6.6", // CGI and WSGI backends read it as X-Forwarded-For
	"X_Real_Ip", "6.6.6.6",
}

// From a peer that is not a trusted proxy, what the client wrote about
// itself never reaches the backend: the forwarding headers are the node's
// own, over every protocol.
func TestClientCannotNameItsOwnAddressToTheBackend(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, echoHeaders)))
	base := "https://" + n.Addrs().HTTPS
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			_, body := get(t, pc.client, base+"/", spoofedForwarding...)
			var seen http.Header
			if err := json.Unmarshal([]byte(body), &seen); err != nil {
				t.Fatalf("backend answer %q: %v", body, err)
			}
			want := map[string]string{
				"X-Forwarded-For":   "127.0.0.1",
				"X-Real-Ip":         "127.0.0.1",
				"X-Forwarded-Proto": "https",
				"X-Forwarded-Host":  n.Addrs().HTTPS,
			}
			for _, k := range []string{"X-Forwarded-For", "X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "Forwarded", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Forwarded-Ssl", "X_forwarded_for", "X_real_ip"} {
				if got := seen[k]; len(got) > 1 || seen.Get(k) != want[k] {
					t.Errorf("the backend got %s %q, want %q", k, got, want[k])
				}
			}
		})
	}
}

// From a trusted proxy, its chain is kept and the peer appended, and the
// backend is told the client geo.trusted_proxies resolves.
func TestTrustedProxysForwardingIsKept(t *testing.T) {
	db := demoDB(t)
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, echoHeaders))+`geo:
  database: "`+db+`"
  trusted_proxies: ["127.0.0.0/8"]
`)
	// The plain listener is for running behind another balancer, which
	// terminated the client's TLS: the backend must hear https from it.
	plain := protoClient{"plain HTTP/1.1", &http.Client{}, 1}
	for _, pc := range append(allClients(t), plain) {
		base := "https://" + n.Addrs().HTTPS
		if pc.name == plain.name {
			base = "http://" + n.Addrs().HTTP
		}
		t.Run(pc.name, func(t *testing.T) {
			_, body := get(t, pc.client, base+"/", "X-Forwarded-For", "6.6.6.6, 85.214.0.1", "X-Real-Ip", "6.6.6.6",
				"X-Forwarded-Port", "443", "X-Forwarded-Proto", "https", "X-Forwarded-Host", "public.example")
			var seen http.Header
			if err := json.Unmarshal([]byte(body), &seen); err != nil {
				t.Fatalf("backend answer %q: %v", body, err)
			}
			for k, want := range map[string]string{
				"X-Forwarded-For":   "6.6.6.6, 85.214.0.1, 127.0.0.1",
				"X-Real-Ip":         "85.214.0.1",
				"X-Forwarded-Port":  "443",
				"X-Forwarded-Proto": "https",
				"X-Forwarded-Host":  "public.example",
			} {
				if got := seen.Get(k); got != want {
					t.Errorf("the backend got %s %q, want %q", k, got, want)
				}
			}
		})
	}
}

// The route's transforms are told the request id and trace the node sends
// the backend and writes in its log, whether the client sent none, one the
// node refused, or one it kept.
func TestTransformsSeeTheNodesRequestIDAndTrace(t *testing.T) {
	mod := watModule(t, "testdata/seenids.wat", t.TempDir())
	n := startNode(t, listenAny+`transforms:
  seen: {module: "`+mod+`"}
services:
  api: {backends: [{url: "`+serveBackend(t, echoHeaders)+`"}]}
routes:
  - {match: {path_prefix: /}, service: api, transforms: [seen]}
`)
	base := "https://" + n.Addrs().HTTPS
	for _, pc := range allClients(t) {
		for name, hdr := range map[string][]string{
			"none":    nil,
			"refused": {"X-Request-Id", strings.Repeat("r", 200), "Traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
			"kept":    {"X-Request-Id", "client-id-1", "Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		} {
			resp, body := get(t, pc.client, base+"/", hdr...)
			var seen http.Header
			if err := json.Unmarshal([]byte(body), &seen); err != nil {
				t.Fatalf("%s, %s: backend answer %q: %v", pc.name, name, body, err)
			}
			id := resp.Header.Get("X-Request-Id")
			if seen.Get("X-Seen-Request-Id") != id || seen.Get("X-Request-Id") != id {
				t.Errorf("%s, %s: the transform saw request id %q, the backend %q, the client was answered %q", pc.name, name, seen.Get("X-Seen-Request-Id"), seen.Get("X-Request-Id"), id)
			}
			if tp := seen.Get("X-Seen-Traceparent"); tp != seen.Get("Traceparent") {
				t.Errorf("%s, %s: the transform saw traceparent %q, the backend %q", pc.name, name, tp, seen.Get("Traceparent"))
			}
		}
	}
}

// The access log names the client the node resolved, as the backend is
// told it, beside the connection's peer.
func TestAccessLogNamesTheResolvedClient(t *testing.T) {
	db := demoDB(t)
	for trusted, want := range map[string]string{`["127.0.0.0/8"]`: "85.214.0.1", `[]`: "127.0.0.1"} {
		path := filepath.Join(t.TempDir(), "access.log")
		yaml := strings.Replace(nodeYAML("round_robin", serveBackend(t, echoHeaders)), "access_log: {enabled: false}", "access_log: {file: "+path+"}", 1)
		n := startNode(t, yaml+"geo:\n  database: \""+db+"\"\n  trusted_proxies: "+trusted+"\n")
		get(t, h1Client(), "https://"+n.Addrs().HTTPS+"/", "X-Forwarded-For", "85.214.0.1")
		req, _ := http.NewRequest("get", "https://"+n.Addrs().HTTPS+"/", nil) // 400, before any route
		req.Header.Set("X-Forwarded-For", "85.214.0.1")
		if resp, err := h1Client().Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("lower-case method: %v %v, want 400", resp, err)
		}
		for _, l := range accessLines(t, path, 2) {
			var rec map[string]any
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatal(err)
			}
			if peer, _ := rec["peer"].(string); rec["client"] != want || !strings.HasPrefix(peer, "127.0.0.1:") {
				t.Errorf("trusted %s: logged client %v, peer %v; want %s and the connection's address", trusted, rec["client"], rec["peer"], want)
			}
		}
	}
}

// A client's tracestate travels with its trace: when the node starts a new
// one (the client's traceparent was missing or invalid), the vendor state
// of a trace that is not ours is dropped (W3C Trace Context, 3.3).
func TestTracestateFollowsOnlyAContinuedTrace(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, echoHeaders)))
	base := "https://" + n.Addrs().HTTPS
	for _, pc := range allClients(t) {
		for tp, want := range map[string]string{
			"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": "vendor=opaque",
			"00-00000000000000000000000000000000-00f067aa0ba902b7-01": "",
			"": "",
		} {
			hdr := []string{"Tracestate", "vendor=opaque"}
			if tp != "" {
				hdr = append(hdr, "Traceparent", tp)
			}
			_, body := get(t, pc.client, base+"/", hdr...)
			var seen http.Header
			if err := json.Unmarshal([]byte(body), &seen); err != nil {
				t.Fatalf("backend answer %q: %v", body, err)
			}
			if got := seen.Get("Tracestate"); got != want {
				t.Errorf("%s, traceparent %q: the backend got tracestate %q with %q, want %q", pc.name, tp, got, seen.Get("Traceparent"), want)
			}
		}
	}
}

// Behind a trusted balancer that appends to X-Forwarded-For and passes a
// client's own Forwarded on (nginx, HAProxy, most do), the two headers
// disagree and the node cannot tell who the client is. X-Real-IP, which
// the node vouches for, must not then name the balancer: a backend that
// lets its internal addresses in would let that client in.
func TestNodeVouchesForNoClientItCouldNotResolve(t *testing.T) {
	db := demoDB(t)
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, echoHeaders))+`geo:
  database: "`+db+`"
  trusted_proxies: ["127.0.0.0/8"]
`)
	base := "https://" + n.Addrs().HTTPS
	for _, pc := range allClients(t) {
		for name, hdr := range map[string][]string{
			"Forwarded beside X-Forwarded-For": {"X-Forwarded-For", "85.214.0.1", "Forwarded", "for=6.6.6.6"},
			"a hop that does not parse":        {"X-Forwarded-For", "85.214.0.1, _hidden"},
		} {
			_, body := get(t, pc.client, base+"/", hdr...)
			var seen http.Header
			if err := json.Unmarshal([]byte(body), &seen); err != nil {
				t.Fatalf("backend answer %q: %v", body, err)
			}
			if got, ok := seen["X-Real-Ip"]; ok {
				t.Errorf("%s, %s: the backend got X-Real-Ip %q, want none", pc.name, name, got)
			}
		}
	}
}

// A client cannot pass a header the node sets under its '_' spelling,
// which CGI and WSGI backends read as the node's own (HTTP_X_PERIGEE_COUNTRY).
func TestOwnHeadersCannotBeSpelledWithUnderscores(t *testing.T) {
	db := demoDB(t)
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, echoHeaders))+`geo:
  database: "`+db+`"
`)
	for _, pc := range allClients(t) {
		_, body := get(t, pc.client, "https://"+n.Addrs().HTTPS+"/", "X_Perigee_Country", "XX", "x_perigee_anything", "1", "X_Request_Id", "forged")
		var seen http.Header
		if err := json.Unmarshal([]byte(body), &seen); err != nil {
			t.Fatalf("backend answer %q: %v", body, err)
		}
		for k := range seen {
			if strings.Contains(k, "_") {
				t.Errorf("%s: the backend got the client's %s %q", pc.name, k, seen[k])
			}
		}
	}
}

// The node resolves the client once, and everything it tells agrees: the
// log, the country tag, steering and X-Real-IP. A Connection header is
// the hop's, but the forwarding headers it names are the node's to read
// and pass on: dropping them between two readings made X-Real-IP vouch
// for the trusted proxy itself, which the log did not name.
func TestConnectionCannotChangeWhoTheClientIs(t *testing.T) {
	db := demoDB(t)
	path := filepath.Join(t.TempDir(), "access.log")
	yaml := strings.Replace(nodeYAML("round_robin", serveBackend(t, echoHeaders)), "access_log: {enabled: false}", "access_log: {file: "+path+"}", 1)
	n := startNode(t, yaml+"geo:\n  database: \""+db+"\"\n  trusted_proxies: [\"127.0.0.0/8\"]\n")
	for _, nominated := range []string{"X-Forwarded-For", "x-forwarded-for, Forwarded", "X-Real-Ip"} {
		_, body := get(t, h1Client(), "https://"+n.Addrs().HTTPS+"/", "X-Forwarded-For", "85.214.0.1", "Connection", nominated)
		var seen http.Header
		if err := json.Unmarshal([]byte(body), &seen); err != nil {
			t.Fatalf("backend answer %q: %v", body, err)
		}
		if got, xff := seen.Get("X-Real-Ip"), seen.Get("X-Forwarded-For"); got != "85.214.0.1" || xff != "85.214.0.1, 127.0.0.1" {
			t.Errorf("Connection: %s: the backend got X-Real-Ip %q, X-Forwarded-For %q; want the client the node resolved, 85.214.0.1", nominated, got, xff)
		}
	}
	for _, l := range accessLines(t, path, 3) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["client"] != "85.214.0.1" {
			t.Errorf("logged client %v, want 85.214.0.1", rec["client"])
		}
	}
}

// accessLines waits for the access log at path to hold n whole lines (it
// is written through a buffer) and returns them; more than n fails t.
func accessLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	waitFor(t, fmt.Sprintf("%d access lines", n), func() bool {
		b, _ := os.ReadFile(path)
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		return len(b) > 0 && b[len(b)-1] == '\n' && len(lines) >= n
	})
	if len(lines) != n {
		t.Fatalf("%d access lines, want %d", len(lines), n)
	}
	return lines
}
