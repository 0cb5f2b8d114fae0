// Package ship is the node side of telemetry: it batches what the node
// records, compresses it, keeps every batch in a bounded on-disk spool until
// the aggregator acknowledges it, and resends with backoff when the
// aggregator is away.
package ship

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"

	"perigee/files"
	"perigee/telemetry/wire"
	"perigee/units"
)

// Config is the node's `telemetry` section; Node and Region come from the
// node's own settings.
type Config struct {
	Aggregator string `yaml:"aggregator" json:"aggregator"` // https://host:port of the aggregator
	// Failover lists more aggregators, tried in turn after Aggregator
	// when the one in use fails.
	Failover           []string       `yaml:"failover" json:"failover,omitempty"`
	TokenFile          string         `yaml:"token_file" json:"token_file"` // file holding this node's bearer token
	Spool              Spool          `yaml:"spool" json:"spool"`
	Interval           units.Duration `yaml:"interval" json:"interval"`                                   // batching period
	CAFile             string         `yaml:"ca_file" json:"ca_file,omitempty"`                           // PEM CA for the aggregator's certificate; empty = system roots
	InsecureSkipVerify bool           `yaml:"insecure_skip_verify" json:"insecure_skip_verify,omitempty"` // development only
	Node, Region       string         `yaml:"-" json:"-"`
	// MaxPending bounds the records held in memory between batches; more
	// are dropped and counted. Zero means DefaultMaxPending.
	MaxPending int `yaml:"-" json:"-"`
	// RetryMax caps the resend backoff. Zero means DefaultRetryMax.
	RetryMax time.Duration `yaml:"-" json:"-"`
	// Clock is the node's clock, which stamps batches; nil means
	// time.Now. Tests give it one that runs fast.
	Clock func() time.Time `yaml:"-" json:"-"`
}

// Spool bounds the on-disk queue of unacknowledged batches.
type Spool struct {
	Dir string         `yaml:"dir" json:"dir"`
	Max units.ByteSize `yaml:"max" json:"max"` // the oldest batches are dropped beyond it
}

// Defaults used when a field is zero.
const (
	DefaultInterval   = 5 * time.Second
	DefaultSpoolMax   = 256 << 20
	DefaultMaxPending = 50_000
	DefaultRetryMax   = 30 * time.Second
	// batchRecords cuts a batch early when this many records are waiting,
	// so a burst does not wait for the period in one huge batch.
	batchRecords = 4096
)

// Validate checks the settings as written, each problem as "field: what";
// New also needs the node's name and a readable token.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for i, a := range append([]string{c.Aggregator}, c.Failover...) {
		if u, err := url.Parse(a); a == "" || err != nil || u.Scheme != "https" || u.Host == "" {
			key := "aggregator"
			if i > 0 {
				key = fmt.Sprintf("failover[%d]", i-1)
			}
			bad("%s: the aggregator must be an https://host:port URL, got %q", key, a)
		}
	}
	if c.Spool.Dir == "" {
		bad("spool.dir: a spool directory is required, for batches the aggregator has not acknowledged")
	}
	if c.Spool.Max < 0 {
		bad("spool.max: the spool size must be positive, got %d", c.Spool.Max)
	}
	if c.Interval != 0 && c.Interval.D() < 10*time.Millisecond {
		bad("interval: the interval %v is too short (minimum 10ms)", c.Interval.D())
	}
	if c.TokenFile == "" {
		bad("token_file: a token file is required, the node's credential")
	}
	return errors.Join(errs...)
}

// validate fills defaults and reads the token; every problem is reported.
func (c *Config) validate() (token string, err error) {
	errs := []error{c.Validate()}
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Node == "" || len(c.Node) > wire.MaxNodeName {
		bad("node: name required, at most %d bytes", wire.MaxNodeName)
	}
	if c.Spool.Max == 0 {
		c.Spool.Max = DefaultSpoolMax
	}
	if c.Interval == 0 {
		c.Interval = units.Duration(DefaultInterval)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.RetryMax <= 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.MaxPending <= 0 {
		c.MaxPending = DefaultMaxPending
	} else if c.MaxPending > wire.MaxRecords {
		// A batch holds what is pending; the aggregator refuses more
		// than MaxRecords of a kind.
		bad("max_pending: %d is over the %d records a batch may carry", c.MaxPending, wire.MaxRecords)
	}
	if c.TokenFile != "" {
		var err error
		if token, err = readToken(c.TokenFile); err != nil {
			bad("token_file: %w", err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("telemetry: %w", err)
	}
	return token, nil
}

// readToken reads the bearer token from path, refusing one that no
// request can carry (a control character, say a file of two lines): the
// transport would fail every post on it, for good. The error shows
// where, never the token.
func readToken(path string) (string, error) {
	tok, err := files.ReadToken(path)
	if err != nil {
		return "", err
	}
	if i := strings.IndexFunc(tok, func(r rune) bool { return r != '\t' && unicode.IsControl(r) }); i >= 0 {
		return "", fmt.Errorf("%s: the token holds a control character at byte %d", path, i)
	}
	return tok, nil
}

// CheckFiles reads the token and CA files as New does and says what New
// would refuse in each, starting nothing: for a config's validation.
func (c Config) CheckFiles() (token, ca error) {
	if c.TokenFile != "" {
		_, token = readToken(c.TokenFile)
	}
	_, ca = tlsConfig(c.CAFile, c.InsecureSkipVerify)
	return token, ca
}
