// Package ship is the node side of telemetry: it batches what the node
// records, compresses it, keeps every batch in a bounded on-disk spool until
// the aggregator acknowledges it, and resends with backoff when the
// aggregator is away.
package ship

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"perigee/telemetry/wire"
)

// Config is the node's telemetry section.
type Config struct {
	Aggregator string // https://host:port of the aggregator
	// Failover lists more aggregators, tried in turn after Aggregator
	// when the one in use fails.
	Failover           []string
	TokenFile          string        // file holding this node's bearer token
	SpoolDir           string        // on-disk queue of unacknowledged batches
	SpoolMax           int64         // bytes on disk (allocated blocks); the oldest batches are dropped beyond it
	Interval           time.Duration // batching period
	Node, Region       string
	CAFile             string // PEM CA for the aggregator's certificate; empty = system roots
	InsecureSkipVerify bool   // development only
	// MaxPending bounds the records held in memory between batches; more
	// are dropped and counted. Zero means DefaultMaxPending.
	MaxPending int
	// RetryMax caps the resend backoff. Zero means DefaultRetryMax.
	RetryMax time.Duration
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

// validate fills defaults and reads the token; every problem is reported.
func (c *Config) validate() (token string, err error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for i, a := range append([]string{c.Aggregator}, c.Failover...) {
		if u, err := url.Parse(a); a == "" || err != nil || u.Scheme != "https" || u.Host == "" {
			key := "aggregator"
			if i > 0 {
				key = fmt.Sprintf("failover[%d]", i-1)
			}
			bad("%s: want an https://host:port URL, got %q", key, a)
		}
	}
	if c.Node == "" || len(c.Node) > wire.MaxNodeName {
		bad("node: name required, at most %d bytes", wire.MaxNodeName)
	}
	if c.SpoolDir == "" {
		bad("spool.dir: required")
	}
	if c.SpoolMax == 0 {
		c.SpoolMax = DefaultSpoolMax
	} else if c.SpoolMax < 0 {
		bad("spool.max: must be positive, got %d", c.SpoolMax)
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	} else if c.Interval < 10*time.Millisecond {
		bad("interval: %v is too short (minimum 10ms)", c.Interval)
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
	if c.TokenFile == "" {
		bad("token_file: required")
	} else if b, err := os.ReadFile(c.TokenFile); err != nil {
		bad("token_file: %w", err)
	} else if token = strings.TrimSpace(string(b)); token == "" {
		bad("token_file %s: empty", c.TokenFile)
	}
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("telemetry: %w", err)
	}
	return token, nil
}
