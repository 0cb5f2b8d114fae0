package edge

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"perigee/edge/discovery/dnstest"
)

// A DNS answer naming the node's own host (127.0.0.1 and the admin
// port, which SRV can carry) made the node proxy clients to services
// that trust loopback: its own admin API, which without a token answers
// whatever comes from there, among them.
func TestDiscoveryCannotReachTheNodesOwnHost(t *testing.T) {
	const name = "_api._tcp." + dnstest.Domain
	target := "b." + dnstest.Domain
	dns := dnstest.Start(t, nil, []dnstest.Host{{Name: target, IP: "127.0.0.1"}})
	n := startNode(t, listenAny+fmt.Sprintf(`services:
  api:
    discovery: {dns: %s, resolver: %q, interval: 1s, timeout: 200ms}
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`, name, dns.Addr))
	_, port, _ := net.SplitHostPort(n.Addrs().Admin)
	p, _ := strconv.Atoi(port)
	dns.Restart([]dnstest.SRV{{Name: name, Target: target, Port: p}}, []dnstest.Host{{Name: target, IP: "127.0.0.1"}})
	waitFor(t, "the new answer is resolved", func() bool {
		st := n.services()[0].Status(time.Now()).Discovery
		return st.Endpoints > 0 || strings.Contains(st.Error, "refused 127.0.0.1")
	})
	for range 20 {
		resp, body := get(t, h1Client(), "https://"+n.Addrs().HTTPS+"/config")
		if resp.StatusCode == 200 && strings.Contains(body, "discovery") {
			t.Fatalf("a client read the admin API's /config through the proxy: %.200s", body)
		}
	}
}
