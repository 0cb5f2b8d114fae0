package config

import (
	"strings"
	"testing"
	"time"

	"perigee/certs/acme"
)

const acmeBase = `listen: {https: "127.0.0.1:8443"}
services:
  api:
    backends: [{url: "http://127.0.0.1:9001"}]
routes:
  - match: {path_prefix: /}
    service: api
`

func TestACMESectionGetsDefaults(t *testing.T) {
	c, err := Parse("acme.yaml", []byte(acmeBase+"acme:\n  hosts: [www.example.com]\n  storage: /var/lib/perigee/acme\n"))
	if err != nil {
		t.Fatal(err)
	}
	a := c.ACME
	if a.CA != acme.LetsEncrypt || !a.Uses(acme.HTTP01) || !a.Uses(acme.TLSALPN01) || a.RenewCheck.D() != 10*time.Minute {
		t.Fatalf("defaults not filled: %+v", a)
	}
}

func TestBadACMESectionsNameTheLine(t *testing.T) {
	acmeAt := func(body string) string { return acmeBase + "acme:\n" + body } // the section starts on line 8
	ok := "  hosts: [www.example.com]\n  storage: /tmp/acme\n"
	cases := []struct{ name, yaml, want string }{
		{"no hosts", acmeAt("  storage: /tmp/acme\n"), `acme.yaml:8: acme: name at least one host`},
		{"no storage", acmeAt("  hosts: [www.example.com]\n"), `acme.yaml:8: acme: set a directory`},
		{"wildcard", acmeAt("  hosts: [www.example.com, \"*.example.com\"]\n  storage: /tmp/acme\n"), `acme.yaml:9: acme: "*.example.com": wildcards need the DNS-01 challenge`},
		{"ip host", acmeAt("  hosts:\n    - www.example.com\n    - 192.0.2.1\n  storage: /tmp/acme\n"), `acme.yaml:11: acme: "192.0.2.1": an IP address`},
		{"duplicate host", acmeAt("  hosts: [www.example.com, WWW.example.com]\n  storage: /tmp/acme\n"), `"WWW.example.com" is listed twice`},
		{"bare name", acmeAt("  hosts: [localhost]\n  storage: /tmp/acme\n"), `not a fully qualified name`},
		{"plain http ca", acmeAt(ok + "  ca: http://ca.example/dir\n"), `acme.yaml:11: acme: "http://ca.example/dir" must be an https:// ACME directory URL`},
		{"unknown challenge", acmeAt(ok + "  challenges: [dns-01]\n"), `acme.yaml:11: acme: "dns-01" is not http-01 or tls-alpn-01`},
		{"bad email", acmeAt(ok + "  email: not an address\n"), `acme.yaml:11: acme: "not an address" is not an address`},
		{"short renew check", acmeAt(ok + "  renew_check: 10ms\n"), `acme.yaml:11: acme: must be at least 1s`},
		{"with tls files", acmeAt(ok) + "tls: {cert: a.pem, key: b.pem}\n", `acme.yaml:11: tls.cert and tls.key cannot be used with acme`},
		{"no https", strings.Replace(acmeAt(ok+"  http_listen: \"127.0.0.1:8080\"\n"), `https: "127.0.0.1:8443"`, `http: "127.0.0.1:8081"`, 1), `acme.yaml:8: acme needs listen.https`},
		{"http-01 without its listener", acmeAt(ok + "  challenges: [http-01]\n"), `acme.yaml:11: acme: no challenge can be answered`},
		{"http_listen taken", acmeAt(ok + "  http_listen: \"127.0.0.1:8443\"\n"), `acme.yaml:11: acme.http_listen "127.0.0.1:8443" is already used by listen.https`},
		{"http_listen not host:port", acmeAt(ok + "  http_listen: \":80:80\"\n"), `acme.yaml:11: acme: ":80:80" is not host:port`},
		{"missing ca roots", acmeAt(ok + "  ca_roots: /nonexistent/roots.pem\n"), `acme.yaml:11: acme.ca_roots: open /nonexistent/roots.pem`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("acme.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted bad config:\n%s", tc.yaml)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}
