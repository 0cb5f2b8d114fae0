package geo_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"

	"perigee/geo"
)

func TestResolveClientBelievesOnlyTrustedProxies(t *testing.T) {
	trusted, err := geo.ParsePrefixes([]string{"10.0.0.0/8", "2001:db8:1::/48", "192.0.2.7", "fe80::/10"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, peer, xff, fwd, want string
	}{
		{"direct", "85.214.1.1:5000", "", "", "85.214.1.1"},
		{"spoofed from untrusted peer", "85.214.1.1:5000", "1.0.16.5", "", "85.214.1.1"},
		{"spoofed Forwarded from untrusted peer", "85.214.1.1:5000", "", "for=1.0.16.5", "85.214.1.1"},
		{"trusted proxy", "10.1.1.1:80", "1.0.16.5", "", "1.0.16.5"},
		{"client prepends a fake hop", "10.1.1.1:80", "6.6.6.6, 1.0.16.5", "", "1.0.16.5"},
		{"chain of trusted proxies", "10.1.1.1:80", "1.0.16.5, 10.2.2.2, 192.0.2.7", "", "1.0.16.5"},
		{"all hops trusted", "10.1.1.1:80", "10.3.3.3", "", "10.3.3.3"},
		{"no header from trusted proxy", "10.1.1.1:80", "", "", "10.1.1.1"},
		{"garbage hop stops the walk", "10.1.1.1:80", "1.0.16.5, bogus", "", "10.1.1.1"},
		{"garbage left of a real client", "10.1.1.1:80", "bogus, 1.0.16.5", "", "1.0.16.5"},
		{"hop with port", "10.1.1.1:80", "1.0.16.5:4711", "", "1.0.16.5"},
		{"Forwarded alone", "10.1.1.1:80", "", `for="[2a01:4f8::9]:443";proto=https, for=10.4.4.4`, "2a01:4f8::9"},
		{"Forwarded and X-Forwarded-For agree", "10.1.1.1:80", "2a01:4f8::9, 10.4.4.4", `for="[2a01:4f8::9]:443";proto=https, for=10.4.4.4`, "2a01:4f8::9"},
		// Most proxies append to X-Forwarded-For and pass a client's own
		// Forwarded on as it came (and the other way round): when the two
		// disagree, which one the proxy wrote is unknown.
		{"client's Forwarded behind an X-Forwarded-For proxy", "10.1.1.1:80", "85.214.3.3", "for=1.0.16.5", "10.1.1.1"},
		{"client's X-Forwarded-For behind a Forwarded proxy", "10.1.1.1:80", "1.0.16.5", "for=85.214.3.3", "10.1.1.1"},
		{"Forwarded obfuscated", "10.1.1.1:80", "", "for=_hidden", "10.1.1.1"},
		{"Forwarded unknown", "10.1.1.1:80", "", "for=unknown;by=10.1.1.1", "10.1.1.1"},
		{"ipv6 trusted peer", "[2001:db8:1::5]:443", "85.214.3.3", "", "85.214.3.3"},
		{"mapped peer", "[::ffff:10.1.1.1]:80", "85.214.3.3", "", "85.214.3.3"},
		{"zone in hop refused", "10.1.1.1:80", "fe80::1%eth0", "", "10.1.1.1"},
		{"zone in hop with port refused", "10.1.1.1:80", "[fe80::1%eth0]:80", "", "10.1.1.1"},
		{"bracketed v6 hop", "10.1.1.1:80", "", `for="[2a01:4f8::9]"`, "2a01:4f8::9"},
		{"v6 hop with port unbracketed", "10.1.1.1:80", "2a01:4f8::9", "", "2a01:4f8::9"},
		// A link-local peer's zone names the node's own interface, not
		// the peer: kept, no prefix contained it, so a trusted proxy on
		// that link was not believed, and X-Real-IP carried "%eth0".
		{"zoned link-local trusted peer", "[fe80::7%eth0]:80", "85.214.3.3", "", "85.214.3.3"},
		{"zoned link-local client", "[fe80::7%eth0]:80", "", "", "fe80::7"},
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = c.peer
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		if c.fwd != "" {
			r.Header.Set("Forwarded", c.fwd)
		}
		if got := geo.ResolveClient(r, trusted).Addr; got != netip.MustParseAddr(c.want) {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "not an address"
	if got := geo.ResolveClient(r, trusted).Addr; got.IsValid() {
		t.Errorf("unreadable RemoteAddr gave %s", got)
	}
	if _, err := geo.ParsePrefixes([]string{"10.0.0.0/33"}); err == nil {
		t.Error("bad prefix accepted")
	}
}

func FuzzResolveClient(f *testing.F) {
	f.Add("10.1.1.1:80", "1.0.16.5, 10.2.2.2", "")
	f.Add("10.1.1.1:80", "", `for="[2a01:4f8::9]:443";proto=https`)
	f.Add("[::1]:1", ",,,", "for=;for")
	trusted, _ := geo.ParsePrefixes([]string{"10.0.0.0/8", "::1"})
	f.Fuzz(func(t *testing.T, peer, xff, fwd string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = peer
		r.Header["X-Forwarded-For"] = []string{xff}
		if fwd != "" {
			r.Header["Forwarded"] = []string{fwd}
		}
		got := geo.ResolveClient(r, trusted).Addr
		// Whatever the headers say, an untrusted peer is its own client.
		if p, err := netip.ParseAddrPort(peer); err == nil && !p.Addr().Unmap().IsLoopback() && !trusted[0].Contains(p.Addr().Unmap()) && got != p.Addr().Unmap() {
			t.Fatalf("untrusted peer %s became %s (xff %q fwd %q)", peer, got, xff, fwd)
		}
	})
}

// What an untrusted peer writes about its client is dropped; a trusted
// proxy's is kept; X-Real-IP is the node's word either way.
func TestForwardingKeepsOnlyTrustedProxiesWords(t *testing.T) {
	trusted, _ := geo.ParsePrefixes([]string{"10.0.0.0/8"})
	claims := map[string][]string{
		"X-Forwarded-For": {"6.6.6.6", "7.7.7.7"}, "x-real-ip": {"6.6.6.6"},
		"Forwarded": {"for=6.6.6.6"}, "X-Forwarded-Prefix": {"/admin"},
		"True-Client-Ip": {"6.6.6.6"}, "Cf-Connecting-Ip": {"6.6.6.6"},
	}
	for _, c := range []struct {
		peer, realIP string
		kept         bool
	}{
		{"85.214.1.1:5000", "85.214.1.1", false},
		{"[fe80::1%eth0]:80", "fe80::1", false}, // the zone is this host's interface
		{"@", "", false},                        // a unix socket's peer
		{"10.1.1.1:80", "", true},               // X-Forwarded-For and Forwarded disagree: the client is unknown
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = c.peer
		for k, v := range claims {
			r.Header[k] = v
		}
		r.Header["X-Other"] = []string{"kept"}
		geo.ResolveClient(r, trusted).Forward(r.Header)
		if got := r.Header.Get("X-Real-Ip"); got != c.realIP || len(r.Header["X-Real-Ip"]) > 1 {
			t.Errorf("peer %s: X-Real-Ip %q, want %q", c.peer, r.Header["X-Real-Ip"], c.realIP)
		}
		for k := range claims {
			if _, ok := r.Header[k]; ok != c.kept && k != "X-Real-Ip" {
				t.Errorf("peer %s: %s kept %v, want %v", c.peer, k, ok, c.kept)
			}
		}
		if r.Header.Get("X-Other") != "kept" {
			t.Errorf("peer %s: an unrelated header was dropped", c.peer)
		}
	}
}

// An operator who writes a trusted prefix in its IPv4-mapped IPv6 form
// means the IPv4 peers it maps: peers are compared unmapped.
func TestMappedTrustedPrefixesMatchTheirIPv4Peers(t *testing.T) {
	trusted, err := geo.ParsePrefixes([]string{"::ffff:10.0.0.0/104", "::ffff:192.0.2.7"})
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range []string{"10.1.1.1:80", "[::ffff:10.1.1.1]:80", "192.0.2.7:1"} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = peer
		r.Header.Set("X-Forwarded-For", "85.214.3.3")
		if got := geo.ResolveClient(r, trusted).Addr; got != netip.MustParseAddr("85.214.3.3") {
			t.Errorf("peer %s under %v: client %s, want the proxy's 85.214.3.3", peer, trusted, got)
		}
	}
}

// A trusted proxy passes on whatever chain its client wrote, up to the
// node's header limit (64 KiB by default). Reading it costs no memory in
// proportion: a chain of 30,000 empty hops once cost 1 MiB a call.
func TestLongChainsCostNoMemory(t *testing.T) {
	trusted, _ := geo.ParsePrefixes([]string{"10.0.0.0/8", "2001:db8::/32"})
	for name, h := range map[string]http.Header{
		"X-Forwarded-For of empty hops":   {"X-Forwarded-For": {strings.Repeat(",", 60<<10)}},
		"X-Forwarded-For of trusted hops": {"X-Forwarded-For": {strings.Repeat("10.9.9.9, ", 6<<10) + "10.9.9.9"}},
		"Forwarded of empty hops":         {"Forwarded": {strings.Repeat(",", 60<<10)}},
		"Forwarded of trusted hops":       {"Forwarded": {strings.Repeat(`for="10.9.9.9:80";by=x, for="[2001:db8::1]", `, 1<<10) + "for=10.9.9.9"}},
		"both, many lines":                {"Forwarded": slices.Repeat([]string{"for=10.9.9.9"}, 4<<10), "X-Forwarded-For": slices.Repeat([]string{"10.9.9.9"}, 4<<10)},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr, r.Header = "10.1.1.1:80", h
		const calls = 20
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range calls {
			geo.ResolveClient(r, trusted)
		}
		runtime.ReadMemStats(&after)
		if per := (after.TotalAlloc - before.TotalAlloc) / calls; per > 4<<10 {
			t.Errorf("%s: %d bytes allocated a call, want a few", name, per)
		}
	}
}
