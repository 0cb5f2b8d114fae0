package aggregator_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"perigee/aggregator"
)

// The API, /metrics and what the dashboard reads show the whole fleet:
// with api_token_file they need its token as a bearer, while ingest keeps
// the nodes' tokens and the dashboard's page itself, which holds no data,
// loads without (it sends the token it finds in its URL's fragment). An
// aggregator whose listen address is not on loopback needs one, as the
// node's admin API does: nodes everywhere must reach that address.
func TestAPITokenGuardsTheAPI(t *testing.T) {
	const apiToken = "api-token-0123456789abcdef"
	dir := t.TempDir()
	file := filepath.Join(dir, "api-token")
	if err := os.WriteFile(file, []byte(apiToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAggregator(t, func(c *aggregator.Config) { c.APITokenFile = file })
	get := func(path, auth string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", a.url(path), nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := a.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/v1/fleet", "/v1/decisions", "/v1/events", "/v1/series?scope=fleet", "/metrics", "/v1/nothing", "/V1/fleet", "//v1/fleet"} {
		for _, auth := range []string{"", "Bearer wrong-token-0123456789", "Bearer " + tokenA, "Basic " + apiToken} {
			if code := get(path, auth); code != http.StatusUnauthorized {
				t.Errorf("GET %s with %q: %d, want 401", path, auth, code)
			}
		}
	}
	for _, path := range []string{"/v1/fleet", "/metrics"} {
		if code := get(path, "Bearer "+apiToken); code != http.StatusOK {
			t.Errorf("GET %s with the API token: %d, want 200", path, code)
		}
	}
	for _, path := range []string{"/", "/app.js", "/app.css"} {
		if code := get(path, ""); code != http.StatusOK {
			t.Errorf("GET %s, the dashboard's page: %d, want 200 without a token", path, code)
		}
	}
	s := newShipper(t, a, "node-a", tokenA, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	s.AddSample(sample("node-a", 0))
	eventually(t, "a batch stored with the node's own token", func() bool { return s.Stats().BatchesAcked >= 1 })

	for _, listen := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:9443"} {
		_, err := aggregator.NewServer(aggregator.Config{Listen: listen, DataDir: t.TempDir(), Tokens: map[string]string{"node-a": tokenA}}, testLog(t))
		if err == nil || !strings.Contains(err.Error(), "api_token_file") {
			t.Errorf("listen %s without api_token_file: %v, want it required", listen, err)
		}
	}
}

// The dashboard opened as /#token=TOKEN reads the API with it, and its
// links to a node's page keep it; opened without, it says what it needs.
func TestDashboardSendsItsAPIToken(t *testing.T) {
	const apiToken = "api-token-0123456789abcdef"
	file := filepath.Join(t.TempDir(), "api-token")
	if err := os.WriteFile(file, []byte(apiToken), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAggregator(t, func(c *aggregator.Config) { c.APITokenFile = file })
	runShipper(t, a, "node-a", tokenA, "eu-west")
	page := openInChromium(t, a.url("/#token="+apiToken))
	var links []string
	eventually(t, "the dashboard to list node-a through the API", func() bool {
		_ = page.eval(t, `JSON.stringify([...document.querySelectorAll("#nodes tr a")].map(a => a.getAttribute("href")))`, &links)
		return len(links) == 1
	})
	if links[0] != "?node=node-a#token="+apiToken {
		t.Errorf("the node's link is %q; want it to keep the token", links[0])
	}
	bare := openInChromium(t, a.url("/"))
	var status string
	eventually(t, "the dashboard without its token to say so", func() bool {
		_ = bare.eval(t, `JSON.stringify(document.getElementById("status").textContent)`, &status)
		return strings.Contains(status, "401") && strings.Contains(status, "#token=")
	})
}
