package edge

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// One client address holds at most limits.max_requests_per_client
// requests at once, over every protocol together: against a slow route, a
// client that keeps opening streams would otherwise take all of the
// service's max_requests and starve everyone else. Past the bound it gets
// a 429 at once; another client is not held back, and once its requests
// end the client gets in again. The client is the one the node resolves
// (here through a trusted proxy's X-Forwarded-For).
func TestRequestsInFlightPerClientAreBounded(t *testing.T) {
	release := make(chan struct{})
	var gate atomic.Pointer[chan struct{}]
	gate.Store(&release)
	var held atomic.Int32
	slow := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held.Add(1)
		<-*gate.Load()
		io.WriteString(w, "ok")
	}))
	db := demoDB(t)
	accessLog := filepath.Join(t.TempDir(), "access.log")
	yaml := func(bound int) string {
		return strings.Replace(nodeYAML("round_robin", slow), "access_log: {enabled: false}", `access_log: {file: "`+accessLog+`"}`, 1) + fmt.Sprintf("limits: {max_requests_per_client: %d}\n", bound) + `geo:
  database: "` + db + `"
  trusted_proxies: ["127.0.0.0/8"]
`
	}
	n := startNode(t, yaml(3))
	base := "https://" + n.Addrs().HTTPS + "/"
	clients := allClients(t)
	const client = "85.214.0.1"
	do := func(c *http.Client, from string) (int, string) {
		req, _ := http.NewRequest("GET", base, nil)
		req.Header.Set("X-Forwarded-For", from)
		resp, err := c.Do(req)
		if err != nil {
			t.Errorf("GET from %s: %v", from, err)
			return 0, ""
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	// One held request over each protocol: the bound is the client's, not
	// a connection's.
	var wg sync.WaitGroup
	for _, pc := range clients {
		wg.Go(func() {
			if st, _ := do(pc.client, client); st != http.StatusOK {
				t.Errorf("%s: held request got %d", pc.name, st)
			}
		})
	}
	waitFor(t, "three requests at the backend", func() bool { return held.Load() == 3 })
	for _, pc := range clients {
		if st, retry := do(pc.client, client); st != http.StatusTooManyRequests || retry == "" {
			t.Errorf("%s: a fourth request got %d (Retry-After %q), want 429 with Retry-After", pc.name, st, retry)
		}
	}
	// The refusals are in the access log, named by the bound.
	waitFor(t, "the refusals in the access log", func() bool {
		b, _ := os.ReadFile(accessLog)
		return strings.Count(string(b), `"status":429`) == 3 && strings.Count(string(b), "limits.max_requests_per_client") == 3
	})
	// The same /64 is the same client; another address is not.
	wg.Go(func() {
		if st, _ := do(clients[1].client, "2001:db8:1:2::1"); st != http.StatusOK {
			t.Errorf("another client's request got %d", st)
		}
	})
	waitFor(t, "another client's request at the backend", func() bool { return held.Load() == 4 })
	for range 3 {
		wg.Go(func() { do(clients[0].client, "2001:db8:1:2::3") })
	}
	waitFor(t, "the /64's requests at the backend", func() bool { return held.Load() == 6 })
	if st, _ := do(clients[2].client, "2001:db8:1:2:ffff::9"); st != http.StatusTooManyRequests {
		t.Errorf("a fourth request from the /64 got %d, want 429", st)
	}
	close(release)
	wg.Wait()
	if st, _ := do(clients[0].client, client); st != http.StatusOK {
		t.Errorf("after its requests ended, the client got %d", st)
	}
	// A reload applies a lowered bound to new requests.
	again := make(chan struct{})
	gate.Store(&again)
	held.Store(0)
	n.rewrite(yaml(1))
	if err := n.Reload(); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { do(clients[1].client, client) })
	waitFor(t, "one request at the backend", func() bool { return held.Load() == 1 })
	if st, _ := do(clients[2].client, client); st != http.StatusTooManyRequests {
		t.Errorf("past the reloaded bound of 1: %d, want 429", st)
	}
	close(again)
	wg.Wait()
}
