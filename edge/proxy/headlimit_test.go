package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
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
		for _, tc := range everyUpstream(t, h) {
			t.Run(size.name+"/"+tc.name, func(t *testing.T) {
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

// A backend's 1xx heads count toward its head's bound on every upstream
// protocol, and those within it are relayed. The standard and HTTP/2
// transports lift their own bound on 1xx heads once a trace takes them
// (ReverseProxy's, which relays them): an https or HTTP/2 backend could
// send 103s without end, each one relayed to the client, for as long as
// response_header let it.
func TestUpstreamInterimHeadsAreBounded(t *testing.T) {
	field := strings.Repeat("x", 1<<10)
	for _, size := range []struct {
		name      string
		heads     int
		want      int
		wantHeads int // relayed to the client; -1: any
	}{{"over", 4 * maxUpstreamHead / len(field), http.StatusBadGateway, -1}, {"under", 3, http.StatusOK, 3}} {
		h := func(w http.ResponseWriter, r *http.Request) {
			// Set once: the HTTP/2 server may still read the map of a 1xx
			// it has sent.
			w.Header().Set("Link", field)
			for range size.heads {
				w.WriteHeader(http.StatusEarlyHints)
			}
			w.Write([]byte("ok"))
		}
		for _, tc := range everyUpstream(t, h) {
			t.Run(size.name+"/"+tc.name, func(t *testing.T) {
				c, front := h2Front(t, tc.protocol, tc.backend, tc.url, Stream{})
				status, _, interim := getCountingInterim(t, c, front+"/x")
				if status != size.want || size.wantHeads >= 0 && interim != size.wantHeads {
					t.Fatalf("status %d after %d interim heads relayed, want %d", status, interim, size.want)
				}
			})
		}
	}
}

// upstreamCase is a backend over one upstream protocol; backend is nil
// for h2c.
type upstreamCase struct {
	name, protocol string
	backend        *httptest.Server
	url            string
}

// everyUpstream serves h over each upstream protocol: HTTP/1.1 in the
// clear and over TLS, h2c and h2.
func everyUpstream(t *testing.T, h http.HandlerFunc) []upstreamCase {
	plain := httptest.NewServer(h)
	t.Cleanup(plain.Close)
	https, h2 := tlsBackend(t, false, h), tlsBackend(t, true, h)
	return []upstreamCase{
		{"http1", upstream.HTTP1, plain, plain.URL},
		{"https", upstream.HTTP1, https, https.URL},
		{"h2c", upstream.H2C, nil, h2cBackend(t, h)},
		{"h2", upstream.H2, h2, h2.URL},
	}
}

// getCountingInterim GETs url and counts the 1xx heads that reached the
// client, which takes every one, so that only the node may refuse them.
func getCountingInterim(t *testing.T, c *http.Client, url string) (status int, body string, interim int) {
	t.Helper()
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(int, textproto.MIMEHeader) error { interim++; return nil },
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), interim
}
