//go:build !wasip1

package modules_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"perigee/runtime/wasm"
)

// The networks are judged against the client the node vouches for in
// X-Real-IP (behind a trusted proxy, the client, not the proxy) as well as
// the connection's peer, in every spelling of an address and a network.
func TestDenyListAddresses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, network, realIP string
		want                  int
	}{
		{"the client behind a trusted proxy", "10.9.0.0/16", "10.9.1.2", 403},
		{"a client outside the networks", "10.9.0.0/16", "10.8.1.2", 200},
		{"a bare address", "127.0.0.1", "", 403},
		{"a bare IPv6 address", "2001:db8::1", "2001:db8::1", 403},
		{"an IPv4-mapped network", "::ffff:127.0.0.0/104", "", 403},
		{"an IPv4-mapped client", "10.9.0.0/16", "::ffff:10.9.1.2", 403},
		{"a link-local client with a zone", "fe80::/10", "fe80::1%eth0", 403},
	}
	for _, c := range cases {
		url := example(t, "denylist", map[string]any{"networks": []any{c.network}})
		header := map[string]string{}
		if c.realIP != "" {
			header["x-real-ip"] = c.realIP
		}
		if resp, _ := do(t, "GET", url+"/", header); resp.StatusCode != c.want {
			t.Errorf("%s (%s, X-Real-IP %q): status %d, want %d", c.name, c.network, c.realIP, resp.StatusCode, c.want)
		}
	}
}

// A network that does not parse is a typo in a deny list: loading refuses
// it rather than serve without it, and the node's log names it.
func TestDenyListRefusesABadNetwork(t *testing.T) {
	t.Parallel()
	refusesToLoad(t, "denylist", map[string]any{"networks": []any{"10.9.0.0/16", "10.9.0.0/33"}}, "10.9.0.0/33")
}

// Countries are two-letter codes in any case and spacing; anything else
// (a three-letter code never matches the node's header) stops loading.
func TestDenyListCountries(t *testing.T) {
	t.Parallel()
	url := example(t, "denylist", map[string]any{"countries": []any{" kp ", "ir"}})
	for country, want := range map[string]int{"KP": 403, "IR": 403, "DE": 200, "": 200} {
		if resp, _ := do(t, "GET", url+"/", map[string]string{"x-perigee-country": country}); resp.StatusCode != want {
			t.Errorf("country %q: status %d, want %d", country, resp.StatusCode, want)
		}
	}
	refusesToLoad(t, "denylist", map[string]any{"countries": []any{"KP", "PRK"}}, "PRK")
	refusesToLoad(t, "denylist", map[string]any{"countries": []any{""}}, "bad country")
	refusesToLoad(t, "denylist", map[string]any{"countries": []any{"KP"}, "country_header": "x-country:"}, `country_header: "x-country:" is no header name`)
}

// refusesToLoad checks that name with config fails to load and that the
// guest logged why at error level, with want in the message.
func refusesToLoad(t *testing.T, name string, config any, want string) {
	t.Helper()
	var log bytes.Buffer
	logged := newHost(slog.New(slog.NewJSONHandler(&log, &slog.HandlerOptions{Level: slog.LevelError})))
	t.Cleanup(func() { logged.Close(context.Background()) })
	cfg, err := wasm.EncodeConfig(config, ".")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := logged.Load(context.Background(), wasm.Spec{Name: name, Source: name, Wasm: build(t, name), Config: cfg, Settings: wasm.Settings{Pool: 1}})
	if err == nil {
		tr.Release()
		t.Errorf("%s loaded with config %v", name, config)
		return
	}
	var msgs []string
	for dec := json.NewDecoder(&log); ; {
		var rec struct{ Text string }
		if dec.Decode(&rec) != nil {
			break
		}
		msgs = append(msgs, rec.Text)
	}
	if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, want) }) {
		t.Errorf("%s with config %v: no error logged says %q: %q", name, config, want, msgs)
	}
}
