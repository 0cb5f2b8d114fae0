package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"perigee/edge/upstream"
)

// A backend's response head is bounded on every upstream protocol: a head
// past the limit is a 502, not megabytes held per request.
func TestUpstreamResponseHeadIsBounded(t *testing.T) {
	for _, size := range []struct {
		name  string
		value int
		want  int
	}{{"over", 2 * maxUpstreamHead, http.StatusBadGateway}, {"under", maxUpstreamHead / 2, http.StatusOK}} {
		h := func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Big", strings.Repeat("x", size.value))
			w.Write([]byte("ok"))
		}
		plain := httptest.NewServer(http.HandlerFunc(h))
		t.Cleanup(plain.Close)
		for _, tc := range []struct {
			name, protocol string
			backend        *httptest.Server
			url            string
		}{
			{"http1", upstream.HTTP1, plain, plain.URL},
			{"https", upstream.HTTP1, tlsBackend(t, false, h), ""},
			{"h2c", upstream.H2C, nil, h2cBackend(t, h)},
			{"h2", upstream.H2, tlsBackend(t, true, h), ""},
		} {
			t.Run(size.name+"/"+tc.name, func(t *testing.T) {
				if tc.url == "" {
					tc.url = tc.backend.URL
				}
				c, front := h2Front(t, tc.protocol, tc.backend, tc.url, Stream{})
				resp, err := c.Get(front + "/x")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != size.want {
					t.Fatalf("status %d, want %d", resp.StatusCode, size.want)
				}
			})
		}
	}
}
