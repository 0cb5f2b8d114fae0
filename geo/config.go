package geo

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"perigee/geo/geoip"
	"perigee/geo/latency"
)

// Config is the `geo:` section of the node configuration.
type Config struct {
	Database       string    `yaml:"database"`
	TrustedProxies []string  `yaml:"trusted_proxies"`
	RedirectCode   int       `yaml:"redirect_code"` // 307 (default) or 308
	DNS            DNSConfig `yaml:"dns"`
}

// DNSConfig is `geo.dns:`; an empty Listen turns GeoDNS off.
type DNSConfig struct {
	Listen string        `yaml:"listen"` // host:port, served on UDP and TCP
	Names  []string      `yaml:"names"`  // fully qualified names answered, e.g. edge.example.net.
	TTL    time.Duration `yaml:"ttl"`    // default 20s
	// Answers is how many nodes go into one answer, best first (default 1).
	Answers int `yaml:"answers"`
	// RateLimit bounds the answers over UDP to any one network.
	RateLimit DNSRateLimit `yaml:"rate_limit"`
}

// DNSRateLimit is response rate limiting: over UDP anyone can send queries
// in a victim's name, so each network (IPv4 /24, IPv6 /48) gets at most
// PerSecond answers a second (default 200; -1 for no limit), and of those
// over it every Slip-th (default 2) goes out empty with TC set, which a
// real resolver retries over TCP; the rest are not sent.
type DNSRateLimit struct {
	PerSecond int `yaml:"per_second"`
	Slip      int `yaml:"slip"`
}

// The rate limit's defaults: a busy resolver farm's /24 asks far less
// than 200 a second of one zone's names, which TTLs let it cache.
const (
	DefaultDNSPerSecond = 200
	DefaultDNSSlip      = 2
)

// Limits is the rate limit with its defaults in place.
func (r DNSRateLimit) Limits() (perSecond, slip int) {
	perSecond, slip = r.PerSecond, r.Slip
	if perSecond == 0 {
		perSecond = DefaultDNSPerSecond
	}
	if slip == 0 {
		slip = DefaultDNSSlip
	}
	return perSecond, slip
}

// Validate checks the section without touching the database file;
// CheckDatabase checks the file. Each problem reads "field: what", with the
// field named in what too (dns.ttl for the DNS settings'), so that the
// config can report each at its own line.
func (c Config) Validate() error {
	var errs []error
	if _, err := ParsePrefixes(c.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("trusted_proxies: trusted_proxies %w", err))
	}
	if c.RedirectCode != 0 && c.RedirectCode != http.StatusTemporaryRedirect && c.RedirectCode != http.StatusPermanentRedirect {
		errs = append(errs, fmt.Errorf("redirect_code: redirect_code %d is neither 307 nor 308", c.RedirectCode))
	}
	errs = append(errs, c.DNS.problems("dns.")...)
	return errors.Join(errs...)
}

// CheckDatabase opens the configured database and verifies every record in
// it (geoip.Check), so a truncated or damaged file fails `perigee validate`
// as it would fail serve. It takes seconds of CPU on a full GeoLite2-City
// file, which is why serve itself does not run it.
func (c Config) CheckDatabase() error {
	if c.Database == "" {
		return nil
	}
	return geoip.Check(c.Database)
}

// Validate checks the DNS settings, each problem as "field: what".
func (c DNSConfig) Validate() error { return errors.Join(c.problems("")...) }

// problems lists what is wrong with the settings, each field named with
// prefix before it (the section they sit in).
func (c DNSConfig) problems(prefix string) []error {
	if c.Listen == "" {
		return nil
	}
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s%s %s", prefix, field, prefix, field, fmt.Sprintf(format, a...)))
	}
	if _, err := netip.ParseAddrPort(c.Listen); err != nil {
		bad("listen", "%q is not an address and port: %v", c.Listen, err)
	}
	if len(c.Names) == 0 {
		bad("names", "needs at least one name")
	}
	for _, n := range c.Names {
		// An empty label, one over 63 octets or a name over 255 (a name
		// is on the wire one octet longer than written, without escapes)
		// is never asked for.
		if _, ok := dns.IsDomainName(n); !ok || !dns.IsFqdn(n) || n == "." || len(n)+1 > 255 {
			bad("names", "%q must be a fully qualified domain name (labels of 1-63 octets, 255 in all, ending in a dot)", n)
		}
	}
	if c.TTL < 0 || c.TTL > 24*time.Hour {
		bad("ttl", "%s is out of range (0 to 24h)", c.TTL)
	}
	if c.Answers < 0 || c.Answers > 8 {
		bad("answers", "%d is out of range 1-8", c.Answers)
	}
	if r := c.RateLimit.PerSecond; r < -1 || r > 1_000_000 {
		bad("rate_limit.per_second", "%d is out of range (1 to 1000000, or -1 for no limit)", r)
	}
	if s := c.RateLimit.Slip; s < 0 || s > 10 {
		bad("rate_limit.slip", "%d is out of range 1-10", s)
	}
	return errs
}

// ParsePrefixes reads CIDR prefixes; a bare address counts as a single host.
func ParsePrefixes(ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			// Peers are compared unmapped: a mapped prefix (::ffff:10.0.0.0/104)
			// stands for the IPv4 one it maps.
			if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a prefix nor an address", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// RouterConfig tunes the latency model and the steering. Zero fields take
// the defaults documented in docs/geo.md.
type RouterConfig struct {
	Trusted []netip.Prefix // peers whose X-Forwarded-For / Forwarded is believed
	// Client is the client the node resolved for a request as it arrived;
	// nil resolves it here, with Trusted.
	Client       func(*http.Request) Client
	RedirectCode int // 307 or 308

	// The model's guess of a round trip (docs/geo.md): the measured median
	// between the metros nearest each end, plus the distance from each end
	// to its metros at KmPerMs, plus BaseRTT.
	Matrix  *latency.Matrix // default latency.Measured
	KmPerMs float64         // default 80 km per ms of RTT: light in fibre, doubled, over a detour
	BaseRTT time.Duration   // default 5ms: access network and stack

	// PriorSamples is how many measurements weigh as much as the model (default 3).
	PriorSamples float64

	// Load: penalty QueueUnit·u/(1-u) for utilisation u = in-flight/capacity;
	// a node at MaxUtilization or above takes no new clients.
	QueueUnit      time.Duration // default 10ms
	MaxUtilization float64       // default 0.95

	// Hysteresis: a client network keeps its node unless another is better
	// by more than max(Margin·expected, MarginMin).
	Margin    float64       // default 0.15
	MarginMin time.Duration // default 5ms

	// SpillMargin: proxy steering forwards when the detour through the mesh
	// saves at least this much over queueing here (default 20ms).
	SpillMargin time.Duration

	// SampleEvery is how often one connection's RTT is sampled (default 10s).
	SampleEvery time.Duration
	// StickyEntries bounds the remembered answers per client network (default 65536).
	StickyEntries int

	Transport http.RoundTripper // for proxy steering; default http.DefaultTransport
	Log       *slog.Logger
}

// RouterConfig derives the router settings from the config section.
func (c Config) RouterConfig() (RouterConfig, error) {
	trusted, err := ParsePrefixes(c.TrustedProxies)
	if err != nil {
		return RouterConfig{}, fmt.Errorf("geo trusted_proxies: %w", err)
	}
	return RouterConfig{Trusted: trusted, RedirectCode: c.RedirectCode}, nil
}

func (c RouterConfig) withDefaults() RouterConfig {
	def := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.RedirectCode != http.StatusPermanentRedirect {
		c.RedirectCode = http.StatusTemporaryRedirect
	}
	if c.Matrix == nil {
		c.Matrix = latency.Measured
	}
	def(&c.KmPerMs, 80)
	defDur(&c.BaseRTT, 5*time.Millisecond)
	def(&c.PriorSamples, 3)
	defDur(&c.QueueUnit, 10*time.Millisecond)
	def(&c.MaxUtilization, 0.95)
	def(&c.Margin, 0.15)
	defDur(&c.MarginMin, 5*time.Millisecond)
	defDur(&c.SpillMargin, 20*time.Millisecond)
	defDur(&c.SampleEvery, 10*time.Second)
	if c.StickyEntries <= 0 {
		c.StickyEntries = 1 << 16
	}
	if c.Transport == nil {
		c.Transport = http.DefaultTransport
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// SteerMode is a route's `steer:` setting.
type SteerMode string

// Steering modes.
const (
	SteerOff      SteerMode = "off"
	SteerRedirect SteerMode = "redirect"
	SteerAltSvc   SteerMode = "alt-svc"
	SteerProxy    SteerMode = "proxy"
)

// ParseSteerMode reads a `steer:` value; empty means off.
func ParseSteerMode(s string) (SteerMode, error) {
	switch m := SteerMode(s); m {
	case "":
		return SteerOff, nil
	case SteerOff, SteerRedirect, SteerAltSvc, SteerProxy:
		return m, nil
	}
	return "", fmt.Errorf("steer: %q is not one of redirect, alt-svc, proxy, off", s)
}
