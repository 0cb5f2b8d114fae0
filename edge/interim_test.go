package edge

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"testing"
	"time"
)

// A backend's 103 Early Hints reaches the client, and the final response
// still carries the node's own headers: relaying a 1xx clears the header
// map, which took X-Request-Id and Alt-Svc off every response after one.
func TestFinalResponseAfterEarlyHintsKeepsTheNodesHeaders(t *testing.T) {
	n := startNode(t, listenAny+`services:
  api: {backends: [{url: "`+serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Write([]byte("ok"))
	}))+`"}]}
routes:
  - {match: {path_prefix: /}, service: api}
`)
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			resp, body := get(t, pc.client, "https://"+n.Addrs().HTTPS+"/")
			if resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Errorf("no X-Request-Id on the final response: %v", resp.Header)
			}
			if pc.proto != 3 && resp.Header.Get("Alt-Svc") == "" {
				t.Errorf("no Alt-Svc on the final response: %v", resp.Header)
			}
		})
	}
}

// A backend's 1xx head reaches the client without the fields that end at
// a hop (Connection, those it names, Keep-Alive, Upgrade, ...) or a
// Content-Length, which RFC 9110 forbids on a 1xx, and with the node's
// own headers alone, as a final head has them. ReverseProxy drops those
// fields from a final response but not from a 1xx it relays: an HTTP/3
// client failed the whole request on them (RFC 9114 4.2 makes the
// response malformed, as RFC 9113 8.2.2 does over HTTP/2), and every
// client got the backend's X-Request-Id and Alt-Svc beside the node's.
func TestEarlyHintsCarryNoHopByHopFields(t *testing.T) {
	hints := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Link", "</app.css>; rel=preload")
		fields := [][2]string{{"Connection", "X-Hop, X-Request-Id"}, {"X-Hop", "secret"}, {"Keep-Alive", "timeout=5"},
			{"Upgrade", "h2c"}, {"Proxy-Connection", "keep-alive"}, {"Te", "trailers"}, {"Trailer", "X-T"},
			{"Alt-Svc", `h3=":1"`}, {"X-Request-Id", "the-backends"}}
		for _, f := range fields {
			h.Set(f[0], f[1])
		}
		w.WriteHeader(http.StatusEarlyHints)
		for _, f := range fields {
			h.Del(f[0])
		}
		h.Del("Link")
		w.Write([]byte("ok"))
	})
	n := startNode(t, listenAny+`services:
  h1: {backends: [{url: "`+serveBackend(t, hints)+`"}]}
  h2c: {protocol: h2c, backends: [{url: "`+serveH2CBackend(t, hints)+`"}]}
routes:
  - {match: {path_prefix: /h1}, service: h1}
  - {match: {path_prefix: /h2c}, service: h2c}
`)
	for _, upstream := range []string{"h1", "h2c"} {
		for _, pc := range allClients(t) {
			t.Run(upstream+"/"+pc.name, func(t *testing.T) {
				var interim []textproto.MIMEHeader
				trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
					interim = append(interim, h)
					return nil
				}}
				req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "https://"+n.Addrs().HTTPS+"/"+upstream, nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := pc.client.Do(req)
				if err != nil {
					t.Fatalf("a request answered with a 103 first: %v", err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
					t.Fatalf("%d %q %v", resp.StatusCode, body, err)
				}
				if len(interim) != 1 {
					t.Fatalf("%d interim heads, want the one 103", len(interim))
				}
				h := interim[0]
				if h.Get("Link") == "" {
					t.Errorf("the 103 lost its Link: %v", h)
				}
				for _, k := range []string{"Connection", "X-Hop", "Keep-Alive", "Upgrade", "Proxy-Connection", "Te", "Trailer", "Content-Length"} {
					if v, ok := h[k]; ok {
						t.Errorf("the 103 carries %s: %q", k, v)
					}
				}
				if id := h.Values("X-Request-Id"); len(id) != 1 || id[0] != resp.Header.Get("X-Request-Id") {
					t.Errorf("the 103's X-Request-Id is %q, want the node's %q alone", id, resp.Header.Get("X-Request-Id"))
				}
				if alt := h.Values("Alt-Svc"); pc.proto == 3 && len(alt) != 0 || pc.proto != 3 && (len(alt) != 1 || alt[0] != resp.Header.Get("Alt-Svc")) {
					t.Errorf("the 103's Alt-Svc is %q, want the node's %q alone", alt, resp.Header.Get("Alt-Svc"))
				}
			})
		}
	}
}

// An HTTP/1.0 client gets no 1xx (RFC 9110 15.2: a server must not send
// one): it, or an HTTP/1.0 proxy in front of the node (nginx's default
// proxy_http_version), reads the first head as the response, and the
// final one after it as its body.
func TestHTTP10ClientGetsNoInterimResponse(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "ok")
	}))))
	conn, err := net.Dial("tcp", n.Addrs().HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("an HTTP/1.0 client got %d %q (%v), want the 200 first", resp.StatusCode, body, err)
	}
}
