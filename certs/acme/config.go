package acme

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"time"

	"perigee/units"
)

// The challenges a CA may be answered with.
const (
	HTTP01    = "http-01"     // on the plain HTTP listener (port 80 at the CA's end)
	TLSALPN01 = "tls-alpn-01" // on the HTTPS listener (port 443 at the CA's end)
)

// LetsEncrypt is the default CA's directory.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// Config is the `acme:` section: which names get certificates, from which
// CA, kept where.
type Config struct {
	// Hosts are the names certificates are obtained and renewed for, one
	// certificate each.
	Hosts []string `yaml:"hosts" json:"hosts"`
	// Email is given to the CA for expiry and incident notices.
	Email string `yaml:"email" json:"email,omitempty"`
	// CA is the ACME directory URL; Let's Encrypt by default.
	CA string `yaml:"ca" json:"ca"`
	// CARoots is a PEM file of the roots that sign the CA's own HTTPS
	// certificate, for a private CA; empty trusts the system's roots.
	CARoots string `yaml:"ca_roots" json:"ca_roots,omitempty"`
	// Storage is the directory of account keys, certificates, private keys
	// and the lock files that let nodes sharing it issue each name once.
	Storage string `yaml:"storage" json:"storage"`
	// Challenges the CA may use; both by default.
	Challenges []string `yaml:"challenges" json:"challenges"`
	// HTTPListen, when set, is a plain HTTP listener that answers HTTP-01
	// challenges and redirects everything else to HTTPS.
	HTTPListen string `yaml:"http_listen" json:"http_listen,omitempty"`
	// RenewCheck is how often certificates are checked for renewal (a third
	// of the lifetime left) and OCSP staples refreshed.
	RenewCheck units.Duration `yaml:"renew_check" json:"renew_check"`
	// IssueTimeout bounds one attempt at an issuance or renewal: a CA that
	// never finishes (a Retry-After of years) fails the attempt instead of
	// hanging it, and it is retried as any failure is.
	IssueTimeout units.Duration `yaml:"issue_timeout" json:"issue_timeout"`
}

// SetDefaults fills what the section leaves out.
func (c *Config) SetDefaults() {
	if c.CA == "" {
		c.CA = LetsEncrypt
	}
	if len(c.Challenges) == 0 {
		c.Challenges = []string{TLSALPN01, HTTP01}
	}
	if c.RenewCheck == 0 {
		c.RenewCheck = units.Duration(10 * time.Minute)
	}
	if c.IssueTimeout == 0 {
		c.IssueTimeout = units.Duration(10 * time.Minute)
	}
}

// Uses reports whether the CA may use the challenge.
func (c *Config) Uses(challenge string) bool { return slices.Contains(c.Challenges, challenge) }

// Validate reports each problem as "field: what".
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Hosts) == 0 {
		bad("hosts: name at least one host to get a certificate for")
	}
	seen := map[string]bool{}
	for i, h := range c.Hosts {
		if err := checkHost(h); err != nil {
			bad("hosts[%d]: %q: %v", i, h, err)
		} else if seen[strings.ToLower(h)] {
			bad("hosts[%d]: %q is listed twice", i, h)
		}
		seen[strings.ToLower(h)] = true
	}
	if c.Email != "" {
		if _, err := mail.ParseAddress(c.Email); err != nil || strings.ContainsAny(c.Email, "<> ") {
			bad("email: %q is not an address like ops@example.com", c.Email)
		}
	}
	if u, err := url.Parse(c.CA); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("ca: %q must be an https:// ACME directory URL", c.CA)
	}
	if c.Storage == "" {
		bad("storage: set a directory for certificates and keys (share it between nodes that serve the same hosts)")
	}
	for i, ch := range c.Challenges {
		if ch != HTTP01 && ch != TLSALPN01 {
			bad("challenges[%d]: %q is not %s or %s", i, ch, HTTP01, TLSALPN01)
		}
	}
	if c.HTTPListen != "" {
		if _, _, err := net.SplitHostPort(c.HTTPListen); err != nil {
			bad("http_listen: %q is not host:port", c.HTTPListen)
		}
	}
	if c.RenewCheck < units.Duration(time.Second) {
		bad("renew_check: must be at least 1s, got %v", c.RenewCheck)
	}
	if c.IssueTimeout < units.Duration(time.Second) {
		bad("issue_timeout: must be at least 1s, got %v", c.IssueTimeout)
	}
	return errors.Join(errs...)
}

// checkHost accepts a DNS name the CA can validate over HTTP or TLS: no IP
// addresses and no wildcards (those need DNS-01).
func checkHost(h string) error {
	switch {
	case h == "":
		return errors.New("empty")
	case strings.Contains(h, "*"):
		return errors.New("wildcards need the DNS-01 challenge, which is not supported")
	case net.ParseIP(h) != nil:
		return errors.New("an IP address, not a name")
	case len(h) > 253 || strings.Trim(h, ".") != h || !strings.Contains(h, "."):
		return errors.New("not a fully qualified name like www.example.com")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("bad label %q", label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("bad character %q", r)
			}
		}
	}
	return nil
}
