package edge

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A request with a body gets the whole of a long response, on every
// protocol: the attempt's context (cancelled when the client's body fails)
// lives until the response body is closed, not until its head arrives.
// HTTP/3 carries a body even for GET, so it is tried both ways.
func TestLongResponseToARequestWithABody(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	api := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		for off := 0; off < len(payload); off += 32 << 10 {
			if _, err := w.Write(payload[off : off+32<<10]); err != nil {
				return
			}
		}
	}))
	n := startNode(t, nodeYAML("round_robin", api))
	for _, c := range allClients(t) {
		for _, method := range []string{"GET", "POST"} {
			var body io.Reader
			if method == "POST" {
				body = strings.NewReader(strings.Repeat("x", 1000))
			}
			req, _ := http.NewRequest(method, "https://"+n.Addrs().HTTPS+"/long", body)
			resp, err := c.client.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", c.name, method, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(got, payload) {
				t.Errorf("%s %s: %d, %d of %d bytes, %v", c.name, method, resp.StatusCode, len(got), len(payload), err)
			}
		}
	}
}
