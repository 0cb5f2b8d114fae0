// Package aggregator is the central telemetry service, `perigee aggregate`:
// it authenticates nodes, accepts their compressed batches exactly once into
// an embedded on-disk store, answers fleet queries as JSON and Prometheus
// metrics, serves the fleet dashboard, can forward to Prometheus
// remote-write and export every stored batch to VictoriaMetrics. Any
// number run side by side, sharing nothing (docs/telemetry.md).
package aggregator

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"perigee/aggregator/store"
	"perigee/connlimit"
	"perigee/files"
	"perigee/loopback"
	"perigee/units"
)

// Config is the aggregator's YAML configuration.
type Config struct {
	Listen     string            `yaml:"listen"`
	TLS        TLSConfig         `yaml:"tls"`
	Tokens     map[string]string `yaml:"tokens"`      // node → token
	TokensFile string            `yaml:"tokens_file"` // YAML map node → token
	// APITokenFile holds the bearer token the API, /metrics and the
	// dashboard's data need; required when Listen is not on loopback.
	APITokenFile string        `yaml:"api_token_file"`
	DataDir      string        `yaml:"data_dir"`
	Retention    time.Duration `yaml:"retention"`
	// MemoryWindow is how much recent history the aggregator keeps in
	// memory, every sample, for the fleet view and short queries; longer
	// queries read the rollup tiers, or the store.
	MemoryWindow    time.Duration `yaml:"memory_window"`
	MaxDecompressed ByteSize      `yaml:"max_decompressed"`
	// MaxStoreBytes bounds the store's segment files on disk; each named
	// node may take its share of it (see nodeBudgets).
	MaxStoreBytes ByteSize `yaml:"max_store_bytes"`
	// MaxConcurrentIngests bounds the batches read and decoded at once;
	// each holds at most 3 × MaxDecompressed, so together they bound
	// ingest memory. More wait briefly, then get 429 and retry.
	MaxConcurrentIngests int              `yaml:"max_concurrent_ingests"`
	MaxSkew              time.Duration    `yaml:"max_skew"` // how far in the future a batch may be stamped
	RemoteWrite          *RemoteWrite     `yaml:"remote_write"`
	Export               *Export          `yaml:"export"`  // every stored batch, as series, to VictoriaMetrics or Mimir
	Regions              map[string]Coord `yaml:"regions"` // where to draw each region on the map
	// Connections bounds what the TCP and the QUIC listener each hold, all
	// together and per client address: anyone may open one, token or not.
	Connections connlimit.Settings `yaml:"connections"`

	// readHeader and idle bound both listeners' header reads and idle
	// connections; zero is defaultReadHeader and defaultIdle. Only tests
	// shorten them (SetListenerTimeouts).
	readHeader, idle time.Duration
	// write bounds writing a response (defaultWrite when zero); only tests
	// shorten it (SetWriteTimeout).
	write time.Duration
	// queryDecode bounds what one series query decodes from the store
	// (maxQueryDecode when zero); only tests lower it
	// (SetQueryDecodeBudget).
	queryDecode int64

	lines map[string]int // key path → line, for validation messages
	file  string
}

// TLSConfig names the certificate; both empty means a self-signed
// development certificate kept in the data directory.
type TLSConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// RemoteWrite forwards fleet figures to a Prometheus remote-write endpoint.
type RemoteWrite struct {
	URL      string        `yaml:"url"`
	Interval time.Duration `yaml:"interval"`
}

// redactedURL is raw without its password, for answers and logs: an
// engine's credentials are its URL's user:password@, which the client
// sends as basic auth.
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(a URL that does not parse)" // Validate refuses it
	}
	return u.Redacted()
}

// Coord is a latitude and longitude in degrees.
type Coord struct {
	Lat float64 `yaml:"lat" json:"lat"`
	Lon float64 `yaml:"lon" json:"lon"`
}

// ByteSize is a size in bytes, written in YAML as 16MiB, 512KiB, 1GB or a
// plain number.
type ByteSize int64

// UnmarshalYAML parses a size with an optional unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := units.ParseBytes(n.Value)
	if err != nil {
		return err
	}
	*b = ByteSize(v)
	return nil
}

// Defaults for zero fields.
const (
	DefaultRetention       = 7 * 24 * time.Hour
	DefaultMaxDecompressed = 16 << 20
	// DefaultMaxStoreBytes is generous for a week of a fleet's telemetry
	// and fixed, not read from the disk: the same config bounds every
	// aggregator of a tier alike, and each node's share of it does not
	// move with whatever else fills the disk (docs/telemetry.md).
	DefaultMaxStoreBytes  = 64 << 30
	DefaultMaxIngests     = 4
	DefaultMemoryWindow   = 15 * time.Minute
	DefaultMaxSkew        = 2 * time.Minute
	DefaultRemoteInterval = 15 * time.Second
)

// maxMaxDecompressed is the largest max_decompressed: its body
// (server.maxBody) is at most a store record.
const maxMaxDecompressed = store.MaxRecord - 64<<10

// maxConfigBytes bounds the config file and the tokens file, which has a
// line a node: a path naming a FIFO, a device or a huge file is refused.
const maxConfigBytes = 16 << 20

// LoadConfig reads and validates a YAML config. Unknown keys are errors;
// every error names the file and line.
func LoadConfig(path string) (Config, error) {
	b, err := files.Read(path, maxConfigBytes)
	if err != nil {
		return Config{}, fmt.Errorf("aggregator config: %w", err)
	}
	root, err := document(b)
	if err != nil {
		return Config{}, yamlError(path, err)
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, yamlError(path, err)
	}
	cfg.file = path
	cfg.lines = map[string]int{}
	indexLines(root, "", cfg.lines)
	// Relative paths in the file are relative to the file.
	dir := dirOf(path)
	for _, p := range []*string{&cfg.TokensFile, &cfg.APITokenFile, &cfg.DataDir, &cfg.TLS.Cert, &cfg.TLS.Key} {
		if *p != "" && !strings.HasPrefix(*p, "/") {
			*p = dir + *p
		}
	}
	return cfg, cfg.Validate()
}

// document parses the config's one YAML document, refusing what the
// decoder would stop at without a line or drop without a word.
func document(b []byte) (*yaml.Node, error) {
	root, err := units.Document(b)
	if err != nil {
		return nil, err
	}
	if misfits, nullKeys := units.Unsaid(root); len(misfits)+len(nullKeys) > 0 {
		return nil, &yaml.TypeError{Errors: append(misfits, nullKeys...)}
	}
	return root, nil
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i+1]
	}
	return ""
}

// yamlError turns "yaml: line 3: ..." into "file:3: ...".
func yamlError(path string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			msgs[i] = path + ":" + strings.TrimPrefix(m, "line ")
		}
		return errors.New(strings.Join(msgs, "\n"))
	}
	return fmt.Errorf("%s:%s", path, strings.TrimPrefix(strings.TrimPrefix(err.Error(), "yaml: "), "line "))
}

func indexLines(n *yaml.Node, prefix string, out map[string]int) {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		indexLines(n.Content[0], prefix, out)
		return
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := prefix + n.Content[i].Value
		out[key] = n.Content[i].Line
		indexLines(n.Content[i+1], key+".", out)
	}
}

// Validate fills defaults and checks every field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		where := c.file
		if line := c.lines[key]; line > 0 {
			where = fmt.Sprintf("%s:%d", c.file, line)
		}
		if where == "" {
			where = "config"
		}
		errs = append(errs, fmt.Errorf("%s: %s: %s", where, key, fmt.Sprintf(format, a...)))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "want host:port, got %q", c.Listen)
	} else if c.APITokenFile == "" && !loopback.Host(c.Listen) {
		bad("api_token_file", "required when listen (%s) is not on loopback: the API and the dashboard show the whole fleet to whoever reaches it", c.Listen)
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		bad("tls", "give both cert and key, or neither for a development certificate")
	}
	if c.DataDir == "" {
		bad("data_dir", "required")
	}
	if len(c.Tokens) == 0 && c.TokensFile == "" {
		bad("tokens", "give tokens or tokens_file: nodes must authenticate")
	}
	for node, tok := range c.Tokens {
		if len(tok) < 16 {
			bad("tokens."+node, "token shorter than 16 characters")
		}
	}
	switch {
	case c.Retention == 0:
		c.Retention = DefaultRetention
	case c.Retention < time.Minute:
		bad("retention", "%v is shorter than a minute", c.Retention)
	}
	switch {
	case c.MemoryWindow == 0:
		c.MemoryWindow = min(DefaultMemoryWindow, c.Retention)
	case c.MemoryWindow < time.Minute || c.MemoryWindow > c.Retention:
		bad("memory_window", "%v: want at least a minute and at most the retention", c.MemoryWindow)
	}
	switch {
	case c.MaxDecompressed == 0:
		c.MaxDecompressed = DefaultMaxDecompressed
	case c.MaxDecompressed < 1<<10:
		bad("max_decompressed", "%d bytes is too small for a batch", c.MaxDecompressed)
	case c.MaxDecompressed > maxMaxDecompressed:
		// A body of that size is over the store's largest record: the
		// batch would be read, refused at its append, and resent for
		// ever, holding up its node's later batches.
		bad("max_decompressed", "%d bytes is over the %d a stored batch may be", c.MaxDecompressed, maxMaxDecompressed)
	}
	switch {
	case c.MaxStoreBytes == 0:
		c.MaxStoreBytes = DefaultMaxStoreBytes
	case c.MaxStoreBytes < c.MaxDecompressed:
		bad("max_store_bytes", "%d bytes is less than max_decompressed (%d): a full batch could never be stored", c.MaxStoreBytes, c.MaxDecompressed)
	}
	switch {
	case c.MaxConcurrentIngests == 0:
		c.MaxConcurrentIngests = DefaultMaxIngests
	case c.MaxConcurrentIngests < 0:
		bad("max_concurrent_ingests", "must be positive")
	}
	if c.MaxSkew == 0 {
		c.MaxSkew = DefaultMaxSkew
	} else if c.MaxSkew < 0 {
		bad("max_skew", "must be positive")
	}
	if rw := c.RemoteWrite; rw != nil {
		if u, err := url.Parse(rw.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("remote_write.url", "want an http(s) URL, got %q", rw.URL)
		}
		if rw.Interval == 0 {
			rw.Interval = DefaultRemoteInterval
		} else if rw.Interval < time.Second {
			bad("remote_write.interval", "%v is shorter than a second", rw.Interval)
		}
	}
	if ex := c.Export; ex != nil {
		if u, err := url.Parse(ex.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("export.url", "want an http(s) remote-write URL, got %q", ex.URL)
		}
	}
	c.Connections.SetDefaults()
	if err := c.Connections.Validate(); err != nil {
		all := []error{err}
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			all = joined.Unwrap()
		}
		for _, e := range all {
			field, what, _ := strings.Cut(e.Error(), ": ")
			bad("connections."+field, "%s", what)
		}
	}
	for name, p := range c.Regions {
		if !(p.Lat >= -90 && p.Lat <= 90 && p.Lon >= -180 && p.Lon <= 180) { // NaN too
			bad("regions."+name, "lat/lon out of range")
		}
	}
	return errors.Join(errs...)
}

// devTokenWarning is what a start with the development token among the
// tokens warns of, and validate with it.
const devTokenWarning = "the tokens include the development token \"*\", which sends as any node: neither one batch at a time nor a node's share of max_store_bytes holds for it; never use it in production"

// Check reads the files NewServer reads before it opens the data
// directory and the sockets (the tokens file, the API token, a configured
// certificate) and reports every problem at once, with what NewServer
// would warn of, and the number of tokens: for `perigee validate`.
func (c Config) Check() (tokens int, warnings []string, err error) {
	var errs []error
	byToken, err := c.loadTokens()
	if err != nil {
		errs = append(errs, err)
	}
	for _, node := range byToken {
		if node == anyNode {
			warnings = append(warnings, devTokenWarning)
		}
	}
	if c.APITokenFile != "" {
		if _, err := readAPIToken(c.APITokenFile); err != nil {
			errs = append(errs, err)
		}
	}
	if c.TLS.Cert != "" { // a development certificate is made at start
		if _, err := loadCertificate(c); err != nil {
			errs = append(errs, fmt.Errorf("tls: %w", err))
		}
	}
	return len(byToken), warnings, errors.Join(errs...)
}

// loadTokens merges Tokens and TokensFile into token → node. A node named
// "*" may send as any node: for development fleets only.
func (c *Config) loadTokens() (map[string]string, error) {
	all := map[string]string{}
	for n, t := range c.Tokens {
		all[n] = t
	}
	if c.TokensFile != "" {
		b, err := files.Read(c.TokensFile, maxConfigBytes)
		if err != nil {
			return nil, fmt.Errorf("tokens_file: %w", err)
		}
		var m map[string]string
		root, err := document(b)
		if err == nil {
			err = root.Decode(&m)
		}
		if err != nil {
			return nil, yamlError(c.TokensFile, err)
		}
		for n, t := range m {
			if len(t) < 16 {
				return nil, fmt.Errorf("%s: token of node %q shorter than 16 characters", c.TokensFile, n)
			}
			all[n] = t
		}
	}
	byToken := make(map[string]string, len(all))
	for n, t := range all {
		if other, dup := byToken[t]; dup {
			return nil, fmt.Errorf("tokens: nodes %q and %q share a token", other, n)
		}
		byToken[t] = n
	}
	return byToken, nil
}
