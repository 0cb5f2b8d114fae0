package geo

import (
	"fmt"
	"testing"
)

// A proxy was kept for every public URL the fleet ever named: a member
// whose URL changes with each report grew the router without end. The
// proxies are a bounded cache, and rebuilt when needed again.
func TestProxiesToNodesAreBounded(t *testing.T) {
	rt := NewRouter(RouterConfig{}, nil, nil, nil)
	for i := range 4 * nodeProxies {
		if rt.proxyTo(Node{ID: "n", PublicURL: fmt.Sprintf("https://n%d.example", i)}) == nil {
			t.Fatal("no proxy for a good URL")
		}
	}
	if n := rt.proxies.Len(); n > nodeProxies {
		t.Errorf("%d proxies kept, want at most %d", n, nodeProxies)
	}
	if a, b := rt.proxyTo(Node{PublicURL: "https://same.example"}), rt.proxyTo(Node{PublicURL: "https://same.example"}); a != b {
		t.Error("a URL's proxy was built twice")
	}
}
