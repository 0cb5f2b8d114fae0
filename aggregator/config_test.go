package aggregator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"perigee/files/filestest"
)

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := LoadConfig("agg.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9443" || cfg.MaxDecompressed != 16<<20 || cfg.TokensFile != "tokens.example.yaml" {
		t.Fatalf("%+v", cfg)
	}
	tokens, err := cfg.loadTokens()
	if err != nil || tokens["dev-fleet-token-change-me"] != anyNode {
		t.Fatalf("tokens %v, %v", tokens, err)
	}
}

func TestLoadConfigErrorsNameFileAndLine(t *testing.T) {
	cases := map[string]struct{ yaml, want string }{
		"unknown key":     {"listen: 127.0.0.1:1\ndata_dir: d\ntokens: {a: aaaaaaaaaaaaaaaaaaaa}\nlisten_addr: x\n", "agg.yaml:4: field listen_addr not found"},
		"bad size":        {"listen: 127.0.0.1:1\ndata_dir: d\ntokens: {a: aaaaaaaaaaaaaaaaaaaa}\nmax_decompressed: lots\n", `invalid size "lots"`},
		"bad listen":      {"listen: nowhere\ndata_dir: d\ntokens: {a: aaaaaaaaaaaaaaaaaaaa}\n", "agg.yaml:1: listen: want host:port"},
		"short token":     {"listen: 127.0.0.1:1\ndata_dir: d\ntokens:\n  a: short\n", "agg.yaml:4: tokens.a: token shorter"},
		"no tokens":       {"listen: 127.0.0.1:1\ndata_dir: d\n", "tokens: give tokens or tokens_file"},
		"remote write":    {"listen: 127.0.0.1:1\ndata_dir: d\ntokens: {a: aaaaaaaaaaaaaaaaaaaa}\nremote_write:\n  url: ftp://x\n", "agg.yaml:5: remote_write.url"},
		"half tls":        {"listen: 127.0.0.1:1\ndata_dir: d\ntokens: {a: aaaaaaaaaaaaaaaaaaaa}\ntls: {cert: c.pem}\n", "agg.yaml:4: tls: give both"},
		"second document": {"listen: 127.0.0.1:1\ndata_dir: d\ntokens: {a: aaaaaaaaaaaaaaaaaaaa}\n---\nlisten_addr: x\n", "agg.yaml:4: a second YAML document"},
		"huge batches":    {"listen: 127.0.0.1:1\ndata_dir: d\ntokens: {a: aaaaaaaaaaaaaaaaaaaa}\nmax_decompressed: 2GiB\n", "agg.yaml:4: max_decompressed: 2147483648 bytes is over"},
		"region at NaN":   {"listen: 127.0.0.1:1\ndata_dir: d\ntokens: {a: aaaaaaaaaaaaaaaaaaaa}\nregions:\n  eu: {lat: .nan, lon: 2}\n", "regions.eu: lat/lon out of range"},
		// yaml.v3 stops at a value its tag does not fit without a line,
		// and drops a null key and all beneath it without a word.
		"tag misfit":        {"listen: 127.0.0.1:1\ndata_dir: d\ntokens: {a: aaaaaaaaaaaaaaaaaaaa}\nmax_concurrent_ingests: !!int many\n", "agg.yaml:4: cannot decode !!str `many` as a !!int"},
		"null key":          {"listen: 127.0.0.1:1\ndata_dir: d\ntokens: {a: aaaaaaaaaaaaaaaaaaaa}\n~: {bogus: 1}\n", "agg.yaml:4: a key that is null"},
		"null region":       {"listen: 127.0.0.1:1\ndata_dir: d\ntokens: {a: aaaaaaaaaaaaaaaaaaaa}\nregions:\n  null: {lat: 1, lon: 2}\n", "agg.yaml:5: a key that is null"},
		"null node's token": {"listen: 127.0.0.1:1\ndata_dir: d\ntokens:\n  a: aaaaaaaaaaaaaaaaaaaa\n  ~: bbbbbbbbbbbbbbbbbbbb\n", "agg.yaml:5: a key that is null"},
	}
	for name, c := range cases {
		path := filepath.Join(t.TempDir(), "agg.yaml")
		os.WriteFile(path, []byte(c.yaml), 0o600)
		_, err := LoadConfig(path)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", name, err, c.want)
		}
	}
}

// TestConfigFilesThatAreNoFilesAreRefused: a config or tokens file path
// naming a FIFO blocked the aggregator's start for good.
// A null node name in a tokens file is refused at its line, not dropped
// with its token (a node the operator meant to admit, then refused).
func TestTokensFileNullNodeIsNamed(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens.yaml")
	os.WriteFile(tokens, []byte("a: aaaaaaaaaaaaaaaaaaaa\nnull: bbbbbbbbbbbbbbbbbbbb\n"), 0o600)
	cfg := Config{TokensFile: tokens}
	if _, err := cfg.loadTokens(); err == nil || !strings.Contains(err.Error(), tokens+":2: a key that is null") {
		t.Fatalf("got %v", err)
	}
}

func TestConfigFilesThatAreNoFilesAreRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filestest.FIFO(t, filepath.Join(dir, "fifo"))
	cfg := filepath.Join(dir, "agg.yaml")
	if err := os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\ndata_dir: "+dir+"\ntokens_file: "+fifo+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, cfg} {
		filestest.Refused(t, "LoadConfig of "+path, func() error {
			c, err := LoadConfig(path)
			if err == nil {
				_, err = c.loadTokens()
			}
			return err
		}, "not a regular file")
	}
}
