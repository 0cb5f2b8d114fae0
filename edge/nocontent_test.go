package edge

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
)

// A response with no content reaches every client framed as one: a 204
// or 304 with no Content-Length (RFC 9110 8.6: a server must not send one
// on a 204, and need not on a 304), whatever the backend sent; the answer
// to a HEAD with its length. Over HTTP/2 a 204's or 304's Content-Length
// made Go's client wait for seven bytes and fail the response.
func TestNoContentCarriesNoContentLength(t *testing.T) {
	n := startNode(t, listenAny+`services:
  api: {backends: [{url: "http://`+cannedBackend(t, func(r *http.Request) string {
		switch {
		case r.Method == http.MethodHead:
			return "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
		case r.URL.Path == "/304":
			return "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\nEtag: \"x\"\r\n\r\n"
		}
		return "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"
	})+`"}]}
routes:
  - {match: {path_prefix: /}, service: api}
`)
	base := "https://" + n.Addrs().HTTPS
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			resp, body := get(t, pc.client, base+"/204")
			if resp.StatusCode != http.StatusNoContent || body != "" {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			if v, ok := resp.Header["Content-Length"]; ok {
				t.Errorf("a 204 reached the client with Content-Length %q", v)
			}
			resp, body = get(t, pc.client, base+"/304")
			if resp.StatusCode != http.StatusNotModified || body != "" || resp.Header.Get("Etag") != `"x"` {
				t.Errorf("304: %d %q %v", resp.StatusCode, body, resp.Header)
			}
			req, _ := http.NewRequest(http.MethodHead, base+"/head", nil)
			resp, err := pc.client.Do(req)
			if err != nil {
				t.Fatalf("HEAD: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.ContentLength != 7 {
				t.Errorf("HEAD: %d, length %d, want 200 and the backend's 7", resp.StatusCode, resp.ContentLength)
			}
		})
	}
}

// cannedBackend answers every request on its connections with the head
// that answer gives it, and returns its address.
func cannedBackend(t *testing.T, answer func(*http.Request) string) string {
	return socketBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, r.Body)
			if _, err := io.WriteString(c, answer(r)); err != nil {
				return
			}
		}
	})
}
