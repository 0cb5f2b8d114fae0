package config

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"perigee/files"
	"perigee/files/filestest"
	"perigee/geo/demodb"
)

// A config with several problems of every kind reports all of them in one
// run, each at its line: what serve would refuse, validate refuses.
func TestCheckReportsEveryErrorAtOnce(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	bad := write("bad.lua", "function evaluate(m)\n  return {\nend\n")
	noEval := write("noeval.lua", "x = 1\n")
	text := write("t.wasm", "this is not a module\n")
	key := write("key.pem", "not a key\n")
	cfg := write("node.yaml", `listen: {https: "127.0.0.1:8443"}
tls: {cert: `+filepath.Join(dir, "missing.pem")+`, key: `+key+`}
services:
  api:
    backends: [{url: "http://127.0.0.1:9001"}]
    colour: red
routes:
  - match: {path_prefix: /}
    service: apx
    transforms: [t]
transforms:
  t: {module: `+text+`}
policies:
  p: {script: `+bad+`}
  q: {script: `+noEval+`}
timeouts: {connect: 5 seconds}
`)
	_, err := Check(context.Background(), cfg)
	if err == nil {
		t.Fatal("a config with many errors passed")
	}
	got := err.Error()
	for _, want := range []string{
		cfg + `:2: tls.cert: open ` + filepath.Join(dir, "missing.pem"),
		cfg + `:6: unknown key "colour"`,
		cfg + `:9: route "route-0": unknown service "apx"`,
		cfg + `:12: transform "t": ` + text + `: not a WebAssembly module`,
		cfg + `:14: policy "p": ` + bad + `:`,
		cfg + `:15: policy "q": `,
		cfg + `:16: bad duration "5 seconds"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n") + 1; n != 7 {
		t.Errorf("want 7 errors, one a line, got %d:\n%s", n, got)
	}
}

func TestCheckPassesAGoodConfig(t *testing.T) {
	if _, err := Check(context.Background(), "testdata/example.yaml"); err != nil {
		t.Fatal(err)
	}
}

// yaml.v3 names the line before the block a parse error is in; the block
// itself is where the reader has to look.
func TestSyntaxErrorNamesTheBlocksLine(t *testing.T) {
	_, err := Parse("bad.yaml", []byte("listen: {https: \"127.0.0.1:8443\"}\nservices:\n  api:\n    backends: []\n   bad: indent\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "bad.yaml:3: did not find expected key") {
		t.Fatalf("got %v", err)
	}
}

// A key defined twice is the only error reported: the decoder skipped the
// mapping it is in, so anything else would be a false alarm.
func TestKeyTwiceIsTheOnlyError(t *testing.T) {
	_, err := Parse("bad.yaml", []byte("listen: {https: \"127.0.0.1:8443\"}\nservices: {api: {backends: [{url: \"http://127.0.0.1:1\"}]}}\nroutes: [{service: api}]\nlisten: {http: \"127.0.0.1:8080\"}\n"))
	if err == nil || strings.Count(err.Error(), "\n") != 0 || !strings.Contains(err.Error(), "already defined") {
		t.Fatalf("got %v", err)
	}
}

// The parts' own loading runs on files that exist: a certificate that is
// not one, an empty admin token, a GeoIP database that is text, an actuator
// whose kubeconfig is not one.
func TestCheckLoadsWhatTheFileNames(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cert, key, token, db, kube := write("c.pem", "x\n"), write("k.pem", "x\n"), write("token", "\n"), write("city.mmdb", "text\n"), write("kubeconfig", "not: [yaml\n")
	cfg := write("node.yaml", `listen: {https: "127.0.0.1:8443"}
tls: {cert: `+cert+`, key: `+key+`}
admin: {token_file: `+token+`}
services:
  api:
    backends: [{url: "http://127.0.0.1:9001"}]
    scale: {actuator: kubernetes, deployment: api, kubeconfig: `+kube+`, min: 1, max: 3}
routes: [{service: api}]
geo: {database: `+db+`}
`)
	_, err := Check(context.Background(), cfg)
	if err == nil {
		t.Fatal("passed")
	}
	got := err.Error()
	for _, want := range []string{cfg + ":2: tls: loading", cfg + ":3: admin.token_file: " + token + " is empty", cfg + `:7: service "api": kubernetes actuator api:`, cfg + ":9: geo.database: "} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

// validate reads each file as serve does, to the same bound: a token file
// or a module over its bound, and CA roots that hold no certificate,
// passed validate (which only checked that the files could be opened)
// and then failed serve.
func TestCheckRefusesWhatServeWouldRefuse(t *testing.T) {
	dir := t.TempDir()
	token := filestest.Sparse(t, filepath.Join(dir, "token"), files.MaxTokenBytes+1)
	module := filestest.Sparse(t, filepath.Join(dir, "t.wasm"), MaxModuleBytes+1)
	roots := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(roots, []byte("no certificate here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	blank := filepath.Join(dir, "blank")
	if err := os.WriteFile(blank, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(cfg, []byte(`listen: {https: "127.0.0.1:8443", admin: "127.0.0.1:9901"}
admin: {token_file: `+token+`}
transforms:
  t: {module: `+module+`}
acme: {hosts: [www.example.com], storage: `+filepath.Join(dir, "acme")+`, ca_roots: `+roots+`}
services:
  api: {backends: [{url: "http://127.0.0.1:9001"}]}
routes: [{service: api, transforms: [t]}]
telemetry: {aggregator: "https://127.0.0.1:9443", token_file: `+blank+`, ca_file: `+roots+`, spool: {dir: `+filepath.Join(dir, "spool")+`}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Check(context.Background(), cfg)
	if err == nil {
		t.Fatal("passed")
	}
	got := err.Error()
	for _, want := range []string{
		cfg + ":2: admin.token_file: " + token + ": over 65536 bytes",
		cfg + `:4: transform "t": ` + module + ": over 268435456 bytes",
		cfg + ":5: acme.ca_roots: " + roots + " holds no PEM certificate",
		cfg + ":9: telemetry.token_file: " + blank + " is empty",
		cfg + ":9: telemetry.ca_file " + roots + ": no PEM certificate in it",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "acme")); err == nil {
		t.Error("validate created the acme storage directory")
	}
	if _, err := os.Stat(filepath.Join(dir, "spool")); err == nil {
		t.Error("validate created the telemetry spool directory")
	}
}

// serve opens a GeoIP database with a quick look (a full check takes seconds
// on a real one); validate runs the full check, so a database cut short
// where the quick look does not reach is refused before it is deployed.
func TestCheckVerifiesATruncatedDatabase(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "city.mmdb")
	if err := demodb.Write(db); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	// Keep the metadata at the end, lose a slice of the search tree.
	cut := append(append([]byte{}, b[:len(b)/4]...), b[len(b)/2:]...)
	if err := os.WriteFile(db, cut, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(cfg, []byte("listen: {https: \"127.0.0.1:8443\"}\nservices:\n  api: {backends: [{url: \"http://127.0.0.1:9001\"}]}\nroutes: [{service: api}]\ngeo: {database: "+db+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), cfg+":5: geo.database") {
		t.Fatalf("a truncated database passed validate: %v", err)
	}
}
