package config

import (
	"perigee/edge/upstream"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExampleFromTheIssueLoads(t *testing.T) {
	c, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Node.ID != "fra-1" || c.Listen.HTTPS != "127.0.0.1:8443" {
		t.Fatalf("node/listen not read: %+v %+v", c.Node, c.Listen)
	}
	api := c.Services["api"]
	if api.Balancer != upstream.LeastRequest || len(api.Backends) != 2 || api.Backends[1].Weight != 2 {
		t.Fatalf("service not read: %+v", api)
	}
	if api.Health.Interval.D() != 2*time.Second || api.Health.Rise != 2 {
		t.Fatalf("health defaults wrong: %+v", api.Health)
	}
	if c.Routes[0].Name != "route-0" || c.Routes[0].Match.PathPrefix != "/api/" {
		t.Fatalf("route not read: %+v", c.Routes[0])
	}
}

// The embedded default runs from the repository root, where its only
// possibly missing files are the modules `make modules` builds.
func TestDefaultConfigIsValid(t *testing.T) {
	t.Chdir("../..")
	_, err := Default()
	if err == nil {
		return
	}
	for _, line := range err.(*Error).Lines {
		if !strings.Contains(line, "modules/build/") {
			t.Errorf("embedded default: %s", line)
		}
	}
}

func TestBadConfigsNameFileAndLine(t *testing.T) {
	base := `listen: {https: "127.0.0.1:8443"}
services:
  api:
    backends: [{url: "http://127.0.0.1:9001"}]
routes:
  - match: {path_prefix: /}
    service: api
`
	cases := []struct{ name, yaml, want string }{
		{"unknown key", base + "bogus: 1\n", `bad.yaml:8: unknown key "bogus"`},
		{"unknown nested key", strings.Replace(base, "service: api", "service: api\n    colour: red", 1), `bad.yaml:8: unknown key "colour"`},
		{"bad duration", base + "timeouts: {connect: 5 seconds}\n", `bad.yaml:8: bad duration "5 seconds"`},
		{"negative timeout", base + "timeouts: {client_body: -1s}\n", `bad.yaml:8: negative duration "-1s"`},
		{"capacity past what gossip carries", base + "node: {capacity: 2147483648}\n", `bad.yaml:8: capacity must be 0..2147483647, got 2147483648`},
		{"sample backend past what it can hold", base + "sample_backends: [{listen: \"127.0.0.1:9002\", size: 1000000GiB}]\n", `bad.yaml:8: size must be at most 67108864 bytes (64 MiB), got 1073741824000000`},
		{"negative capacity", base + "node: {capacity: -1}\n", `bad.yaml:8: capacity must be 0..2147483647, got -1`},
		{"negative route timeout", strings.Replace(base, "service: api", "service: api\n    timeouts: {upstream_read: -2s}", 1), `bad.yaml:8: negative duration "-2s"`},
		{"unknown route timeout", strings.Replace(base, "service: api", "service: api\n    timeouts: {drain: 1s}", 1), `unknown key "drain"`},
		{"prefix not normal", strings.Replace(base, "path_prefix: /", "path_prefix: /a//b/../", 1), `bad.yaml:6: route "route-0": path_prefix "/a//b/../" is not a normal path`},
		{"unknown service", strings.Replace(base, "service: api", "service: apx", 1), `bad.yaml:7: route "route-0": unknown service "apx"`},
		{"duplicate listener", strings.Replace(base, `{https: "127.0.0.1:8443"}`, `{https: "127.0.0.1:8443", admin: "127.0.0.1:8443"}`, 1), `bad.yaml:1: listen.admin "127.0.0.1:8443" is already used by listen.https`},
		{"bad balancer", strings.Replace(base, "  api:\n", "  api:\n    balancer: random\n", 1), `bad.yaml:4: service "api": unknown balancer "random"`},
		{"bad backend url", strings.Replace(base, "http://127.0.0.1:9001", "127.0.0.1:9001", 1), `bad.yaml:4: service "api": backend url "127.0.0.1:9001" must be http(s)://host:port`},
		{"half tls", base + "tls: {cert: a.pem}\n", `bad.yaml:8: tls needs both cert and key`},
		{"public admin without token", strings.Replace(base, `{https: "127.0.0.1:8443"}`, `{https: "127.0.0.1:8443", admin: "0.0.0.0:9901"}`, 1), `bad.yaml:1: admin listener "0.0.0.0:9901" is not on loopback`},
		{"bad wildcard", strings.Replace(base, "{path_prefix: /}", "{host: \"a.*.com\", path_prefix: /}", 1), `bad.yaml:6: route "route-0": host "a.*.com"`},
		{"key twice", base + "listen: {http: \"127.0.0.1:8080\"}\n", `bad.yaml:8: mapping key "listen" already defined at line 1`},
		{"not yaml", "listen: [\n", `bad.yaml:2: did not find expected node content`},
		{"second document", base + "---\nroutes: []\n", `bad.yaml:8: a second YAML document, which would be ignored: the config is one document`},
		{"document after an end marker", base + "...\nbogus: 1\n", `bad.yaml:9: did not find expected <document start>`},
		{"not yaml in a second document", base + "---\nlisten: [\n", `bad.yaml:10: did not find expected node content`},
		{"missing module", base + "transforms:\n  t: {module: /nonexistent/t.wasm}\n", `bad.yaml:9: transform "t" module: open /nonexistent/t.wasm: no such file or directory`},
		{"max_buffer too small", base + "transforms:\n  t: {module: /nonexistent/t.wasm, max_buffer: 100B}\n", `bad.yaml:9: transform "t": max_buffer must be 1KiB..1GiB`},
		{"init_timeout out of range", base + "transforms:\n  t: {module: /nonexistent/t.wasm, init_timeout: 5m}\n", `bad.yaml:9: transform "t": init_timeout must be 1ms..1m0s, got 5m0s`},
		{"unknown abi", base + "transforms:\n  t: {module: /nonexistent/t.wasm, abi: wasi}\n", `bad.yaml:9: transform "t": abi must be http-wasm or proxy-wasm`},
		{"config and configuration", base + "transforms:\n  t: {module: /nonexistent/t.wasm, config: a, configuration: b}\n", `transform "t": set config (http-wasm) or configuration (proxy-wasm), not both`},
		{"missing token file", base + "admin: {token_file: /nonexistent/token}\n", `bad.yaml:8: admin.token_file: open /nonexistent/token`},
		{"sample backend on the node's port", base + "sample_backends: [{listen: \"127.0.0.1:8443\"}]\n", `bad.yaml:8: sample backend "127.0.0.1:8443" listens where the node does`},
		{"bad health path", strings.Replace(base, "  api:\n", "  api:\n    health:\n      path: healthz\n", 1), `bad.yaml:5: service "api": health path must start with /`},
		{"second backend", strings.Replace(base, `[{url: "http://127.0.0.1:9001"}]`, "\n      - {url: \"http://127.0.0.1:9001\"}\n      - {url: \"http://127.0.0.1:9001/x\"}", 1), `bad.yaml:6: service "api": backend url "http://127.0.0.1:9001/x" must not have a path`},
		{"unknown actuator", strings.Replace(base, "  api:\n", "  api:\n    scale:\n      actuator: magic\n", 1), `bad.yaml:5: service "api": unknown actuator "magic"`},
		{"policy interval", base + "policies:\n  p:\n    script: p.lua\n    interval: 10ms\n", `bad.yaml:11: policy "p": the interval 10ms is below the minimum 50ms`},
		{"telemetry over http", base + "telemetry:\n  token_file: t\n  spool: {dir: d}\n  aggregator: http://a:1\n", `bad.yaml:11: telemetry: the aggregator must be an https://host:port URL`},
		{"hash without key", strings.Replace(base, "  api:\n", "  api:\n    balancer: hash\n", 1), `needs exactly one of hash.header`},
		{"unknown protocol", strings.Replace(base, "  api:\n", "  api:\n    protocol: spdy\n", 1), `bad.yaml:4: service "api": unknown protocol "spdy" (http1, h2c, h2)`},
		{"method the node refuses", strings.Replace(base, "{path_prefix: /}", "{path_prefix: /, methods: [GET, PURGE!]}", 1), `bad.yaml:6: route "route-0": method "PURGE!" can never match: the node takes only methods of A-Z, 0-9, - and _`},
		{"connection bound", base + "limits:\n  connections:\n    max_total: 100\n    max_per_address: 0x7fffffff\n", `bad.yaml:11: limits.connections: max_per_address must be 1..1048576, got 2147483647`},
		{"connections per address over total", base + "limits:\n  connections: {max_total: 10, max_per_address: 20}\n", `bad.yaml:9: limits.connections: max_per_address (20) is over max_total (10)`},
		{"requests per client", base + "limits:\n  max_requests_per_client: -1\n", `bad.yaml:9: limits.max_requests_per_client must be 0 (no bound) to 1048576, got -1`},
		{"location not a number", base + "node: {id: a, location: {lat: .nan, lon: 8.7}}\n", `bad.yaml:8: location lat must be within ±90 and lon within ±180`},
		{"static node off the map", base + "geo:\n  nodes:\n    - {id: b, public_url: \"https://b.example.net\", location: {lat: 500, lon: 0}}\n", `bad.yaml:10: geo.nodes: location lat must be within ±90 and lon within ±180`},
		{"static node not a number", base + "geo:\n  nodes:\n    - {id: b, public_url: \"https://b.example.net\", location: {lat: 1, lon: .nan}}\n", `bad.yaml:10: geo.nodes: location lat must be within ±90`},
		{"static node url not absolute", base + "geo:\n  nodes:\n    - {id: b, public_url: b.example.net}\n", `bad.yaml:10: geo.nodes: public_url "b.example.net" must be an absolute http(s) URL`},
		{"node id with a space", base + "node: {id: fra 1}\n", `bad.yaml:8: node.id "fra 1" may hold only letters, digits, '-', '_' and '.'`},
		{"node id with a comma", base + "node: {id: \"fra,1\"}\n", `bad.yaml:8: node.id "fra,1" may hold only`},
		{"int tag on a word", base + "node: {id: a, capacity: !!int many}\n", "bad.yaml:8: cannot decode !!str `many` as a !!int"},
		{"float tag past a float", base + "node:\n  location: {lat: !!float 1e400}\n", "bad.yaml:9: cannot decode !!str `1e400` as a !!float"},
		{"binary tag on no base64", base + "node: {id: !!binary \"@@@\"}\n", "bad.yaml:8: !!binary value contains invalid base64 data"},
		{"every bad tag", base + "node: {capacity: !!int x}\nlimits: {max_requests_per_client: !!bool maybe}\n", "bad.yaml:8: cannot decode !!str `x` as a !!int\nbad.yaml:9: cannot decode !!str `maybe` as a !!bool"},
		{"null key", base + "~: {bogus: 1}\nnode: {capacity: -1}\n", "bad.yaml:8: a key that is null (~, null or none) names nothing\nbad.yaml:9: capacity must be"},
		{"null key in a section", strings.Replace(base, "  api:\n", "  null:\n    backends: []\n  api:\n", 1), "bad.yaml:3: a key that is null"},
		{"h2 over http", strings.Replace(base, "  api:\n", "  api:\n    protocol: h2\n", 1), `bad.yaml:5: service "api": backend url "http://127.0.0.1:9001": protocol h2 needs https:// backends`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted bad config:\n%s", tc.yaml)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// The geo section's problems are each one line at its own key, like every
// other section's: they came as one error at the "geo:" line, the second
// problem on a line of its own with no file or line at all.
func TestGeoErrorsNameTheirLines(t *testing.T) {
	doc := `listen: {https: "127.0.0.1:8443"}
services:
  api: {backends: [{url: "http://127.0.0.1:9001"}]}
routes: [{service: api}]
geo:
  trusted_proxies: [nonsense]
  redirect_code: 301
  dns:
    listen: "127.0.0.1:5353"
    names: [edge.example.net.]
    ttl: 48h
    rate_limit: {per_second: -2, slip: 11}
`
	_, err := Parse("bad.yaml", []byte(doc))
	if err == nil {
		t.Fatal("accepted")
	}
	want := []string{
		`bad.yaml:6: geo: trusted_proxies "nonsense" is neither a prefix nor an address`,
		`bad.yaml:7: geo: redirect_code 301 is neither 307 nor 308`,
		`bad.yaml:11: geo: dns.ttl 48h0m0s is out of range (0 to 24h)`,
		`bad.yaml:12: geo: dns.rate_limit.per_second -2 is out of range (1 to 1000000, or -1 for no limit)`,
		`bad.yaml:12: geo: dns.rate_limit.slip 11 is out of range 1-10`,
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", err, strings.Join(want, "\n"))
	}
}

func TestUnreadableFileIsAnError(t *testing.T) {
	_, err := Load("testdata/missing.yaml")
	if err == nil || !strings.Contains(err.Error(), "testdata/missing.yaml") {
		t.Fatalf("want an error naming the file, got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("listen: {https: \"127.0.0.1:1\"}\n"))
	f.Add(defaultYAML)
	f.Add([]byte("services: {a: {backends: [{url: x}]}}\nroutes: [{service: a}]\n"))
	f.Add([]byte("routes: [~, {match: {methods: [get]}}]\ntimeouts: {idle: -1s}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("fuzz.yaml", b)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && !strings.HasPrefix(err.Error(), "fuzz.yaml") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}

// A sample backend in a config answers as `perigee sample-backend` does.
func TestSampleBackendSizeDefault(t *testing.T) {
	c, err := Parse("n.yaml", []byte("listen: {https: \"127.0.0.1:8443\"}\nsample_backends: [{listen: \"127.0.0.1:9001\"}]\nservices: {api: {backends: [{url: \"http://127.0.0.1:9001\"}]}}\nroutes: [{service: api}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.SampleBackends[0].Size != 512 {
		t.Fatalf("size %d, want 512", c.SampleBackends[0].Size)
	}
}
