package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// `validate --aggregator` checks an aggregator's config as `aggregate`
// would, short of the data directory and the sockets: the tokens and
// tokens_file, the API token, every problem at once; and it warns of what
// `aggregate` warns of at start, the development token "*" (which sends
// as any node, outside every per-node bound). validate knew node configs
// only, so a tokens file holding "*" went unremarked until the
// aggregator ran.
func TestValidateAggregatorConfig(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	tokens := writeConfig(t, "node-a: token-of-node-a-0123456789\n\"*\": token-of-the-dev-fleet-0123456789\n")
	agg := writeConfig(t, "listen: 127.0.0.1:9443\ndata_dir: "+data+"\ntokens_file: "+tokens+"\n")
	code, out := perigee(t, "validate", "--aggregator", agg)
	if code != 0 || !strings.Contains(out, agg+": ok (2 tokens)") || !strings.Contains(out, `warning: the tokens include the development token "*"`) {
		t.Fatalf("a config with the development token: exit %d:\n%s", code, out)
	}

	short := writeConfig(t, "node-a: short\n")
	missing := filepath.Join(t.TempDir(), "no-such-file")
	bad := writeConfig(t, "listen: 127.0.0.1:9443\ndata_dir: "+data+"\ntokens_file: "+short+"\napi_token_file: "+missing+"\n")
	code, out = perigee(t, "validate", "--aggregator", bad)
	for _, want := range []string{short + `: token of node "node-a" shorter than 16 characters`, "api_token_file: open " + missing} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("a bad config: exit %d, want %q in:\n%s", code, want, out)
		}
	}
	if code, out := perigee(t, "validate", "--config", agg, "--aggregator", agg); code != 2 || !strings.Contains(out, "one of --config and --aggregator") {
		t.Fatalf("both flags: exit %d: %s", code, out)
	}
}
