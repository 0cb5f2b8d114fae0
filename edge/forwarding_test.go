package edge

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	"perigee/geo/demodb"
)

// spoofedForwarding is what a hostile client writes to name its own
// address, scheme and host to the backend.
var spoofedForwarding = []string{
	"X-Forwarded-For", "6.6.6.6",
	"X-Real-Ip", "6.6.6.6",
	"True-Client-Ip", "6.6.6.6",
	"X-Client-Ip", "6.6.6.6",
	"Forwarded", "for=6.6.6.6;proto=http;host=evil.example",
	"X-Forwarded-Proto", "http",
	"X-Forwarded-Host", "evil.example",
	"X-Forwarded-Port", "80",
	"X-Forwarded-Ssl", "off",
}

// From a peer that is not a trusted proxy, what the client wrote about
// itself never reaches the backend: the forwarding headers are the node's
// own, over every protocol.
func TestClientCannotNameItsOwnAddressToTheBackend(t *testing.T) {
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, echoHeaders)))
	base := "https://" + n.Addrs().HTTPS
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			_, body := get(t, pc.client, base+"/", spoofedForwarding...)
			var seen http.Header
			if err := json.Unmarshal([]byte(body), &seen); err != nil {
				t.Fatalf("backend answer %q: %v", body, err)
			}
			want := map[string]string{
				"X-Forwarded-For":   "127.0.0.1",
				"X-Real-Ip":         "127.0.0.1",
				"X-Forwarded-Proto": "https",
				"X-Forwarded-Host":  n.Addrs().HTTPS,
			}
			for _, k := range []string{"X-Forwarded-For", "X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "Forwarded", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Forwarded-Ssl"} {
				if got := seen[k]; len(got) > 1 || seen.Get(k) != want[k] {
					t.Errorf("the backend got %s %q, want %q", k, got, want[k])
				}
			}
		})
	}
}

// From a trusted proxy, its chain is kept and the peer appended, and the
// backend is told the client geo.trusted_proxies resolves.
func TestTrustedProxysForwardingIsKept(t *testing.T) {
	db := filepath.Join(t.TempDir(), "city.mmdb")
	if err := demodb.Write(db); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, echoHeaders))+`geo:
  database: "`+db+`"
  trusted_proxies: ["127.0.0.0/8"]
`)
	base := "https://" + n.Addrs().HTTPS
	for _, pc := range allClients(t) {
		t.Run(pc.name, func(t *testing.T) {
			_, body := get(t, pc.client, base+"/", "X-Forwarded-For", "6.6.6.6, 85.214.0.1", "X-Real-Ip", "6.6.6.6", "X-Forwarded-Port", "443")
			var seen http.Header
			if err := json.Unmarshal([]byte(body), &seen); err != nil {
				t.Fatalf("backend answer %q: %v", body, err)
			}
			for k, want := range map[string]string{
				"X-Forwarded-For":  "6.6.6.6, 85.214.0.1, 127.0.0.1",
				"X-Real-Ip":        "85.214.0.1",
				"X-Forwarded-Port": "443",
			} {
				if got := seen.Get(k); got != want {
					t.Errorf("the backend got %s %q, want %q", k, got, want)
				}
			}
		})
	}
}
