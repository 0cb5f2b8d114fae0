package edge

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// The hash balancer's client_ip keys on the client the node resolved:
// behind a trusted balancer (every peer the same address) clients still
// spread over the backends, and a client that is not behind one cannot
// choose its backend by naming another client in X-Forwarded-For.
func TestHashClientIPKeysOnTheResolvedClient(t *testing.T) {
	db := demoDB(t)
	var backends []string
	for i := range 4 {
		name := fmt.Sprint("b", i)
		backends = append(backends, serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(name))
		})))
	}
	svc := strings.Replace(nodeYAML("hash", backends...), "balancer: hash\n", "balancer: hash\n    hash: {client_ip: true}\n", 1)
	seen := func(trusted string) map[string]bool {
		n := startNode(t, svc+"geo:\n  database: \""+db+"\"\n  trusted_proxies: "+trusted+"\n")
		got := map[string]bool{}
		for i := range 64 {
			_, body := get(t, h1Client(), "https://"+n.Addrs().HTTPS+"/", "X-Forwarded-For", fmt.Sprintf("85.214.%d.%d", i/8, 1+i%8))
			got[body] = true
		}
		return got
	}
	if got := seen(`["127.0.0.0/8"]`); len(got) < 2 {
		t.Errorf("64 clients behind a trusted proxy all went to %v: the hash keys on the proxy", got)
	}
	if got := seen(`[]`); len(got) != 1 {
		t.Errorf("one untrusted client naming 64 others reached %v: it chose its backend", got)
	}
}
