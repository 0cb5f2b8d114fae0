package edge

import (
	"testing"
	"time"
)

// Issue 11 defect 6: a backend ejected before a reload came back only in
// the retired config's service, never in the one serving.
func TestEjectionEndsOnTimeAcrossAReload(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", backend(t, "one"), backend(t, "two")))
	svc := n.state.Load().services["api"]
	if err := svc.Eject(svc.Backends()[0].Addr, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := n.Reload(); err != nil {
		t.Fatal(err)
	}
	now := n.state.Load().services["api"]
	if now == svc || len(now.Healthy()) != 1 {
		t.Fatalf("the reload did not keep the ejection (%d healthy)", len(now.Healthy()))
	}
	base := "https://" + n.Addrs().HTTPS
	waitFor(t, "the ejected backend serves again after the reload", func() bool {
		seen := map[string]bool{}
		for range 6 {
			resp, _ := get(t, h1Client(), base+"/")
			seen[resp.Header.Get("X-Backend")] = true
		}
		return seen["one"] && seen["two"]
	})
}
