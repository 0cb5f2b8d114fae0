package admin

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// node answers the API's reads with fixed values and counts reloads.
type node struct{ reloads int }

func (n *node) Status() any   { return map[string]string{"state": "serving"} }
func (n *node) Routes() any   { return []string{} }
func (n *node) Services() any { return map[string]any{} }
func (n *node) Config() any   { return map[string]any{"admin": map[string]string{"token": "t0ken"}} }
func (n *node) Reload() error {
	n.reloads++
	if n.reloads > 1 {
		return errors.New("bad config")
	}
	return nil
}

func serve(t *testing.T, token string) (*httptest.Server, *node) {
	t.Helper()
	n := &node{}
	srv := httptest.NewServer(New(n, http.NotFoundHandler(), token))
	t.Cleanup(srv.Close)
	return srv, n
}

func do(t *testing.T, method, url string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if h := header.Get("Host"); h != "" {
		req.Host = h
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// With a token, only the exact "Bearer <token>" passes: a prefix of it,
// the token with more after it, another scheme or none are refused alike.
func TestTokenIsRequiredExactly(t *testing.T) {
	const token = "s3cret-admin-token"
	srv, _ := serve(t, token)
	for auth, want := range map[string]int{
		"Bearer " + token:       http.StatusOK,
		"":                      http.StatusUnauthorized,
		"Bearer":                http.StatusUnauthorized,
		"Bearer " + token[:5]:   http.StatusUnauthorized,
		"Bearer " + token + "x": http.StatusUnauthorized,
		"Basic " + token:        http.StatusUnauthorized,
		token:                   http.StatusUnauthorized,
	} {
		h := http.Header{}
		if auth != "" {
			h.Set("Authorization", auth)
		}
		status, body := do(t, "GET", srv.URL+"/status", h)
		if status != want {
			t.Errorf("Authorization %q: %d %s, want %d", auth, status, body, want)
		}
		if want == http.StatusUnauthorized && !strings.Contains(body, "bearer token") {
			t.Errorf("Authorization %q: body %q does not say why", auth, body)
		}
	}
}

// Without a token the API answers loopback Host names only, refuses what
// a proxy passed on, takes state changes from its own origin only, and
// nothing a browser says another site's page asked for.
func TestWithoutATokenOnlyThisHostsCallersReachIt(t *testing.T) {
	srv, n := serve(t, "")
	for _, c := range []struct {
		method string
		header http.Header
		want   int
	}{
		{"GET", nil, http.StatusOK},
		{"GET", http.Header{"Host": {"localhost:9901"}}, http.StatusOK},
		{"GET", http.Header{"Host": {"attacker.example:9901"}}, http.StatusForbidden},
		{"GET", http.Header{"X-Forwarded-For": {"192.0.2.1"}}, http.StatusForbidden},
		{"GET", http.Header{"Via": {"1.1 proxy"}}, http.StatusForbidden},
		{"POST", http.Header{"Origin": {"https://attacker.example"}}, http.StatusForbidden},
		{"POST", http.Header{"Origin": {"null"}}, http.StatusForbidden},
		{"POST", http.Header{"Origin": {srv.URL}}, http.StatusOK},
		// A page elsewhere can still make a browser GET (an <img>, a
		// link): of a profile or a trace that costs the node CPU for as
		// long as the page asks. The browser says where the request is
		// from.
		{"GET", http.Header{"Sec-Fetch-Site": {"cross-site"}}, http.StatusForbidden},
		{"GET", http.Header{"Sec-Fetch-Site": {"same-site"}}, http.StatusForbidden},
		{"GET", http.Header{"Sec-Fetch-Site": {"same-origin"}}, http.StatusOK},
		{"GET", http.Header{"Sec-Fetch-Site": {"none"}}, http.StatusOK}, // typed in the address bar
	} {
		path := "/status"
		if c.method == "POST" {
			path = "/reload"
		}
		status, body := do(t, c.method, srv.URL+path, c.header)
		if status != c.want {
			t.Errorf("%s %s with %v: %d %s, want %d", c.method, path, c.header, status, body, c.want)
		}
	}
	if n.reloads != 1 {
		t.Errorf("%d reloads, want the one from the API's own origin", n.reloads)
	}
	if status, body := do(t, "POST", srv.URL+"/reload", nil); status != http.StatusUnprocessableEntity || !strings.Contains(body, "bad config") {
		t.Errorf("a refused reload: %d %s", status, body)
	}
	if _, body := do(t, "GET", srv.URL+"/config", nil); strings.Contains(body, "t0ken") || !strings.Contains(body, Redacted) {
		t.Errorf("GET /config shows a secret: %s", body)
	}
}
