package upstream

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"perigee/edge/discovery"
	"perigee/units"
)

// Balancer names.
const (
	RoundRobin   = "round_robin"
	LeastRequest = "least_request"
	EWMA         = "ewma"
	Hash         = "hash"
)

// Upstream protocols: how the node speaks to a service's backends.
const (
	HTTP1 = "http1" // HTTP/1.1, over TLS for https:// backends
	H2C   = "h2c"   // HTTP/2 over cleartext TCP with prior knowledge (gRPC servers)
	H2    = "h2"    // HTTP/2 over TLS, negotiated by ALPN
)

// Config is one service's settings: its backends, balancer, health checks,
// outlier ejection and retries.
type Config struct {
	// Protocol is what the node speaks to the backends: HTTP1, H2C or H2.
	Protocol string          `yaml:"protocol" json:"protocol"`
	Balancer string          `yaml:"balancer" json:"balancer"`
	Hash     HashKey         `yaml:"hash" json:"hash,omitzero"`
	Backends []BackendConfig `yaml:"backends" json:"backends"`
	Health   Health          `yaml:"health" json:"health"`
	Outlier  Outlier         `yaml:"outlier" json:"outlier"`
	Retry    Retry           `yaml:"retry" json:"retry"`
	Circuit  Circuit         `yaml:"circuit" json:"circuit"`
	// Discovery finds more backends in DNS, beside the static ones.
	Discovery discovery.Config `yaml:"discovery" json:"discovery,omitzero"`
	// PanicThreshold is the healthy share (percent) below which the service
	// balances across all its backends rather than the few left; 0 turns
	// panic mode off. Nil means Envoy's default, 50.
	PanicThreshold *int `yaml:"panic_threshold" json:"panic_threshold"`
	// ActiveRequestBias is how strongly least_request with unequal weights
	// avoids loaded backends: 0 is weighted round robin. Nil means 1.
	ActiveRequestBias *float64 `yaml:"active_request_bias" json:"active_request_bias,omitempty"`
}

// BackendConfig is one upstream server.
type BackendConfig struct {
	URL    string `yaml:"url" json:"url"`
	Weight int    `yaml:"weight" json:"weight"`
}

// HashKey chooses what the hash balancer hashes: exactly one of the three.
type HashKey struct {
	Header   string `yaml:"header" json:"header,omitempty"`
	Cookie   string `yaml:"cookie" json:"cookie,omitempty"`
	ClientIP bool   `yaml:"client_ip" json:"client_ip,omitempty"`
}

// Health configures active checks; an empty path turns them off.
type Health struct {
	Path     string         `yaml:"path" json:"path,omitempty"`
	Interval units.Duration `yaml:"interval" json:"interval"`
	Timeout  units.Duration `yaml:"timeout" json:"timeout"`
	Rise     int            `yaml:"rise" json:"rise"`
	Fall     int            `yaml:"fall" json:"fall"`
}

// Outlier configures passive ejection of failing backends.
type Outlier struct {
	ConsecutiveFailures int            `yaml:"consecutive_failures" json:"consecutive_failures"`
	BaseEjection        units.Duration `yaml:"base_ejection" json:"base_ejection"`
	MaxEjection         units.Duration `yaml:"max_ejection" json:"max_ejection"`
	MaxEjectedPercent   int            `yaml:"max_ejected_percent" json:"max_ejected_percent"`
}

// Retry configures retries of idempotent requests that failed to connect.
type Retry struct {
	Attempts int     `yaml:"attempts" json:"attempts"` // extra tries after the first
	Budget   float64 `yaml:"budget" json:"budget"`     // retries allowed per request, on average
}

// DefaultActiveRequestBias is Envoy's least request active_request_bias.
const DefaultActiveRequestBias = 1.0

// DefaultPanicThreshold is Envoy's healthy panic threshold, in percent.
const DefaultPanicThreshold = 50

// SetDefaults fills what the config leaves out.
func (c *Config) SetDefaults() {
	if c.Protocol == "" {
		c.Protocol = HTTP1
	}
	if c.Balancer == "" {
		c.Balancer = RoundRobin
	}
	for i := range c.Backends {
		if c.Backends[i].Weight == 0 {
			c.Backends[i].Weight = 1
		}
	}
	h := &c.Health
	setDur(&h.Interval, 2*time.Second)
	setDur(&h.Timeout, time.Second)
	setInt(&h.Rise, 2)
	setInt(&h.Fall, 3)
	o := &c.Outlier
	setInt(&o.ConsecutiveFailures, 5)
	setDur(&o.BaseEjection, 5*time.Second)
	setDur(&o.MaxEjection, 5*time.Minute)
	setInt(&o.MaxEjectedPercent, 50)
	setInt(&c.Retry.Attempts, 2)
	if c.Retry.Budget == 0 {
		c.Retry.Budget = 0.2
	}
	c.Circuit.SetDefaults()
	c.Discovery.SetDefaults()
	if c.PanicThreshold == nil {
		p := DefaultPanicThreshold
		c.PanicThreshold = &p
	}
}

func setDur(d *units.Duration, def time.Duration) {
	if *d == 0 {
		*d = units.Duration(def)
	}
}

func setInt(i *int, def int) {
	if *i == 0 {
		*i = def
	}
}

// Validate reports every problem, each as "field: what" so that the config
// can name the line.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch c.Balancer {
	case RoundRobin, LeastRequest, EWMA:
	case Hash:
		n := 0
		for _, set := range []bool{c.Hash.Header != "", c.Hash.Cookie != "", c.Hash.ClientIP} {
			if set {
				n++
			}
		}
		if n != 1 {
			bad("hash", "the hash balancer needs exactly one of hash.header, hash.cookie, hash.client_ip")
		}
	default:
		bad("balancer", "unknown balancer %q (%s, %s, %s, %s)", c.Balancer, RoundRobin, LeastRequest, EWMA, Hash)
	}
	// h2c has no TLS to negotiate with and h2 needs it: each takes one scheme.
	scheme := map[string]string{H2C: "http", H2: "https"}[c.Protocol]
	switch c.Protocol {
	case HTTP1, H2C, H2:
	default:
		bad("protocol", "unknown protocol %q (%s, %s, %s)", c.Protocol, HTTP1, H2C, H2)
	}
	if scheme != "" && c.Discovery.Enabled() && c.Discovery.Scheme != scheme {
		bad("discovery.scheme", "protocol %s needs discovery scheme %s", c.Protocol, scheme)
	}
	// A backend is known by its address (policies, the actuator and the
	// metrics name it so): two URLs for one would be one backend twice.
	seen := map[string]int{}
	for i, b := range c.Backends {
		at := fmt.Sprintf("backends[%d]", i)
		u, err := url.Parse(b.URL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad(at, "backend url %q must be http(s)://host:port", b.URL)
		case u.Path != "" && u.Path != "/":
			bad(at, "backend url %q must not have a path", b.URL)
		case scheme != "" && u.Scheme != scheme:
			bad(at, "backend url %q: protocol %s needs %s:// backends", b.URL, c.Protocol, scheme)
		}
		if err == nil && u.Host != "" {
			if j, ok := seen[u.Host]; ok {
				bad(at, "backend %q has the address of backends[%d], %q", b.URL, j, c.Backends[j].URL)
			} else {
				seen[u.Host] = i
			}
		}
		if b.Weight < 1 || b.Weight > 1000 {
			bad(at, "backend weight must be 1..1000, got %d", b.Weight)
		}
	}
	h := c.Health
	if h.Path != "" && !strings.HasPrefix(h.Path, "/") {
		bad("health.path", "health path must start with /")
	}
	if h.Rise < 1 || h.Fall < 1 {
		bad("health", "health rise and fall must be at least 1")
	}
	o := c.Outlier
	if o.ConsecutiveFailures < 0 || o.MaxEjectedPercent < 0 || o.MaxEjectedPercent > 100 {
		bad("outlier", "outlier consecutive_failures must be ≥ 0 and max_ejected_percent 0..100")
	}
	if b := c.ActiveRequestBias; b != nil && !(*b >= 0 && *b <= 10) {
		bad("active_request_bias", "active_request_bias must be 0..10, got %v", *b)
	}
	if p := c.PanicThreshold; p != nil && (*p < 0 || *p > 100) {
		bad("panic_threshold", "panic_threshold must be 0..100 (percent; 0 turns panic mode off), got %d", *p)
	}
	if c.Retry.Attempts < 0 || c.Retry.Budget < 0 || c.Retry.Budget > 1 {
		bad("retry", "retry attempts must be ≥ 0 and budget 0..1")
	}
	errs = append(errs, within("circuit", c.Circuit.Validate())...)
	errs = append(errs, within("discovery", c.Discovery.Validate())...)
	return errors.Join(errs...)
}

// within names a nested settings type's problems by their full field.
func within(field string, err error) []error {
	if err == nil {
		return nil
	}
	inner := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		inner = j.Unwrap()
	}
	out := make([]error, len(inner))
	for i, e := range inner {
		out[i] = fmt.Errorf("%s.%w", field, e)
	}
	return out
}
