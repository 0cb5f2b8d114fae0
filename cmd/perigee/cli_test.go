package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"perigee/runtime/wasm"

	"perigee/logtest"
	"perigee/units"
)

// Every command answers -h with its help and exit 0, before or after its
// subcommand.
func TestHelpExitsZeroEverywhere(t *testing.T) {
	cases := [][]string{{"-h"}, {"help"}, {"policy", "-h"}, {"policy", "test", "-h"}, {"wasm", "-h"}, {"wasm", "build", "-h"}, {"wasm", "init", "-h"}}
	for _, c := range commands {
		cases = append(cases, []string{c.name, "-h"})
	}
	for _, args := range cases {
		if code, out := perigee(t, args...); code != 0 || out == "" {
			t.Errorf("perigee %s: exit %d: %s", strings.Join(args, " "), code, out)
		}
	}
}

// Flags may follow the file they are about; stray arguments are still
// refused, and "--" ends the flags.
func TestFlagsInAnyPosition(t *testing.T) {
	trace := "../../policies/traces/flash_sale.csv"
	code, out := perigee(t, "policy", "test", "--trace", trace, "../../policies/queue_depth.lua")
	if code != 0 || !strings.Contains(out, "summary:") {
		t.Fatalf("policy test with --trace first: exit %d: %s", code, out)
	}
	code, out = perigee(t, "wasm", "build", "-o", filepath.Join(t.TempDir(), "x.wasm"))
	if code != 2 {
		t.Fatalf("wasm build without DIR: exit %d: %s", code, out)
	}
	code, out = perigee(t, "validate", "--config", "../../edge/config/testdata/example.yaml", "extra")
	if code != 2 || !strings.Contains(out, `unexpected argument "extra"`) {
		t.Fatalf("stray argument: exit %d: %s", code, out)
	}
	fs := newFlags("t", io.Discard)
	o := fs.String("o", "", "")
	pos, err := parseArgs(fs, []string{"a", "-o", "x", "b", "--", "-c"})
	if err != nil || *o != "x" || strings.Join(pos, " ") != "a b -c" {
		t.Fatalf("parseArgs: %v %q %q", err, *o, pos)
	}
}

// The bash script completes commands and, by asking the binary, flags.
func TestBashCompletion(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	code, script := perigee(t, "completion", "bash")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, script)
	}
	complete := func(words ...string) string {
		t.Helper()
		prog := fmt.Sprintf("%s\nCOMP_WORDS=(%s); COMP_CWORD=%d; _perigee; echo \"${COMPREPLY[*]}\"", script, strings.Join(words, " "), len(words)-1)
		out, err := exec.Command("bash", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := complete(bin, "val"); got != "validate" {
		t.Errorf("command: %q", got)
	}
	if got := complete(bin, "policy", "test", "--tr"); got != "--trace" {
		t.Errorf("policy test flag: %q", got)
	}
	if got := complete(bin, "wasm", ""); got != "init build" {
		t.Errorf("wasm subcommands: %q", got)
	}
	for _, sh := range []string{"zsh", "fish"} {
		if code, out := perigee(t, "completion", sh); code != 0 || !strings.Contains(out, "perigee") {
			t.Errorf("%s: exit %d: %s", sh, code, out)
		}
	}
	if code, _ := perigee(t, "completion", "tcsh"); code != 2 {
		t.Errorf("unknown shell: exit %d", code)
	}
}

// `perigee proxy` serves a backend over HTTP/1.1, HTTP/2 and HTTP/3 with a
// dev certificate, as a real child process.
func TestProxyServesEveryProtocol(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend saw %s", r.URL.Path)
	}))
	defer backend.Close()
	addr := "127.0.0.1:" + freePort(t, "127.0.0.1")
	cmd := exec.Command(bin, "proxy", "--to", strings.TrimPrefix(backend.URL, "http://"), "--from", addr, "--log-format", "json")
	out := &logtest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}
	eventually(t, "the proxy serving", func() bool { return status(h1, "https://"+addr+"/x") == 200 })
	for proto, c := range map[string]*http.Client{"HTTP/1.1": h1, "HTTP/2.0": insecureClient(false), "HTTP/3.0": insecureClient(true)} {
		resp, err := c.Get("https://" + addr + "/a/b")
		if err != nil {
			t.Fatalf("%s: %v\n%s", proto, err, out)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Proto != proto || string(body) != "backend saw /a/b" {
			t.Errorf("%s: got %s %q", proto, resp.Proto, body)
		}
	}
	if code, out := perigee(t, "proxy", "--from", addr); code != 2 || !strings.Contains(out, "--to is required") {
		t.Errorf("no --to: exit %d: %s", code, out)
	}
}

// A transform started with `wasm init` outside the repository builds with
// stock Go, without the module proxy, and runs in the host.
func TestWasmInitBuildsOutsideTheRepo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mytransform")
	if code, out := perigee(t, "wasm", "init", dir); code != 0 {
		t.Fatalf("init: exit %d: %s", code, out)
	}
	if code, out := perigee(t, "wasm", "init", dir); code != 1 || !strings.Contains(out, "already has a go.mod") {
		t.Fatalf("second init: exit %d: %s", code, out)
	}
	out := filepath.Join(t.TempDir(), "t.wasm")
	cmd := exec.Command(bin, "wasm", "build", "-o", out, dir)
	cmd.Dir = t.TempDir() // nowhere near this repository's go.mod
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod", "GOWORK=off")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		t.Fatalf("build: %v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "building "+dir) || !strings.Contains(log.String(), "wrote "+out) {
		t.Errorf("build did not say what it did:\n%s", log.String())
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	host, err := wasm.NewHost(wasm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	defer host.Close(ctx)
	tr, err := host.Load(ctx, wasm.Spec{Name: "mytransform", Source: out, Wasm: bin, Settings: wasm.Settings{Pool: 1, Timeout: units.Duration(10 * time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Release()
	var seen string
	h := wasm.NewChain(tr).Then(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.Header.Get("x-transform") }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if seen != "mytransform" || rec.Result().Header.Get("x-transform") != "mytransform" {
		t.Fatalf("transform did not run: request header %q, response %v", seen, rec.Result().Header)
	}
}

// `wasm init` into a directory that already holds files of those names
// (a main.go of the operator's, an sdk/ of an older init) writes none and
// names every one: it overwrote them before, with only go.mod checked.
func TestWasmInitOverwritesNothing(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"main.go", "sdk/go.mod"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, f), []byte("mine\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, out := perigee(t, "wasm", "init", dir)
	if code != 1 || !strings.Contains(out, filepath.Join(dir, "main.go")) || !strings.Contains(out, filepath.Join(dir, "sdk/go.mod")) {
		t.Errorf("init over existing files: exit %d: %s", code, out)
	}
	for _, f := range []string{"main.go", "sdk/go.mod"} {
		if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != "mine\n" {
			t.Errorf("%s was overwritten: %q", f, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
		t.Error("a refused init wrote go.mod")
	}
}

// A directory without a go.mod is refused with what to do instead.
func TestWasmBuildWithoutModuleSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	code, out := perigee(t, "wasm", "build", dir, "-o", filepath.Join(dir, "x.wasm"))
	if code != 1 || !strings.Contains(out, "perigee wasm init "+dir) {
		t.Fatalf("exit %d: %s", code, out)
	}
}

// The systemd unit docs/deploy.md gives passes systemd's own check, run
// against this binary.
func TestDeployUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze")
	}
	doc, err := os.ReadFile("../../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```ini\n")
	unit, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/deploy.md has no ini block")
	}
	path := filepath.Join(t.TempDir(), "perigee.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/perigee", bin)), 0o644)
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// logrotate's way: move the access log away, send SIGUSR1, and the node
// writes a new file at the path while the moved one keeps what it had.
func TestServeReopensAccessLogOnSIGUSR1(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	https := "127.0.0.1:" + freePort(t, "127.0.0.1")
	c := serveChild(t, writeConfig(t, fmt.Sprintf(`listen: {https: %q, admin: "127.0.0.1:0"}
access_log: {file: %q}
services:
  api: {backends: [{url: "http://%s"}]}
routes: [{service: api}]
`, https, logPath, backendAddr(t))))
	h2 := insecureClient(false)
	eventually(t, "serving", func() bool { return status(h2, "https://"+https+"/first") == 200 })
	eventually(t, "the first record", func() bool { b, _ := os.ReadFile(logPath); return strings.Contains(string(b), "/first") })
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	c.cmd.Process.Signal(syscall.SIGUSR1)
	eventually(t, "a new file after SIGUSR1", func() bool {
		status(h2, "https://"+https+"/second")
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "/second")
	})
	// Requests sent before the signal was handled went to the moved file,
	// rightly; once the new file is in use, nothing more does.
	before, _ := os.ReadFile(logPath + ".1")
	eventually(t, "the third record", func() bool {
		status(h2, "https://"+https+"/third")
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "/third")
	})
	if after, _ := os.ReadFile(logPath + ".1"); !bytes.Equal(before, after) {
		t.Fatalf("the moved file still gets records:\n%s", after)
	}
}

// A node whose certificates come from ACME says so at start: the names and
// the CA, where to see the certificates, and neither an empty SPKI nor the
// dev certificate's hints (there is no dev certificate to trust blindly).
func TestACMEBannerSaysWhatIsTrue(t *testing.T) {
	https, admin := "127.0.0.1:"+freePort(t, "127.0.0.1"), "127.0.0.1:"+freePort(t, "127.0.0.1")
	path := writeConfig(t, fmt.Sprintf(`listen: {https: %q, admin: %q}
acme:
  hosts: [www.perigee.test, api.perigee.test]
  ca: https://127.0.0.1:1/directory
  storage: %s
  challenges: [tls-alpn-01]
services:
  api: {backends: [{url: "http://127.0.0.1:9"}]}
routes:
  - {match: {path_prefix: /}, service: api}
`, https, admin, t.TempDir()))
	c := serveChild(t, path)
	eventually(t, "the start banner", func() bool { return strings.Contains(c.out.String(), "admin:") })
	out := c.out.String()
	for _, want := range []string{"www.perigee.test, api.perigee.test", "https://127.0.0.1:1/directory", "/certificates"} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"SPKI", "curl -k", "ignore-certificate-errors"} {
		if strings.Contains(out, bad) {
			t.Errorf("banner of an ACME node shows %q:\n%s", bad, out)
		}
	}
}

// The demo backend makes its answer body at start, --size bytes of it: a
// size past what can be allocated panicked (makeslice: len out of range),
// and a large one took that much memory before the first request. It is
// refused as a usage error, above the 64 MiB the size= parameter allows.
func TestSampleBackendRefusesAnUnallocatableSize(t *testing.T) {
	for _, size := range []string{"9223372036854775807", "40000000000", "67108865"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a size taken serves until killed
		out, err := exec.CommandContext(ctx, bin, "sample-backend", "--listen", "127.0.0.1:0", "--size", size).CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || strings.Contains(string(out), "panic") || !strings.Contains(string(out), "--size") {
			t.Errorf("--size %s: %v:\n%s", size, err, out)
		}
	}
}
