//go:build !wasip1

package modules_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"perigee/runtime/wasm"

	"perigee/units"
)

// host keeps compiled examples on disk between runs: compiling a Go guest
// under the race detector takes seconds.
var host = newHost(nil)

// newHost is a host on the shared cache; a nil logger discards guest logs.
func newHost(logger *slog.Logger) *wasm.Host {
	h, err := wasm.NewHost(wasm.Options{CacheDir: filepath.Join(os.TempDir(), "perigee-modules-test-cache"), Logger: logger})
	if err != nil {
		panic(err)
	}
	return h
}

var (
	buildMu sync.Mutex
	built   = map[string][]byte{}
)

// build compiles one example once per test binary.
func build(t testing.TB, name string) []byte {
	t.Helper()
	buildMu.Lock()
	bin, ok := built[name]
	buildMu.Unlock()
	if ok {
		return bin
	}
	out := filepath.Join(t.TempDir(), name+".wasm")
	if name == "wat" {
		if _, err := exec.LookPath("wat2wasm"); err != nil {
			t.Skip("wat2wasm not installed (Debian package wabt)")
		}
		if b, err := exec.Command("wat2wasm", "wat/poweredby.wat", "-o", out).CombinedOutput(); err != nil {
			t.Fatalf("wat2wasm: %v\n%s", err, b)
		}
	} else if err := wasm.Build(context.Background(), name, out); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	buildMu.Lock()
	built[name] = bin
	buildMu.Unlock()
	return bin
}

// example loads one example with config and serves it in front of a
// backend that echoes what reached it.
func example(t *testing.T, name string, config any) string {
	t.Helper()
	return exampleBefore(t, name, config, echoBackend)
}

var echoBackend = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-upstream-uri", r.RequestURI)
	for _, h := range []string{"x-edge", "x-api-key", "x-jwt-sub"} {
		w.Header().Set("x-upstream-"+h, r.Header.Get(h))
	}
	w.Header().Set("server", "backend")
	w.Header().Set("content-type", "application/json")
	io.WriteString(w, `{"user":"ann","password":"hunter2","cards":[{"ssn":"123"}]}`)
})

// exampleBefore loads one example with config and serves it in front of
// backend.
func exampleBefore(t *testing.T, name string, config any, backend http.Handler) string {
	t.Helper()
	bin := build(t, name)
	cfg, err := wasm.EncodeConfig(config, ".")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := host.Load(context.Background(), wasm.Spec{Name: name, Source: name, Wasm: bin, Config: cfg, Settings: wasm.Settings{Pool: 2, Timeout: units.Duration(10 * time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Release)
	srv := httptest.NewServer(wasm.NewChain(tr).Then(backend))
	t.Cleanup(srv.Close)
	return srv.URL
}

func do(t *testing.T, method, url string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestAddHeader(t *testing.T) {
	t.Parallel()
	url := example(t, "addheader", "x-edge: fra-1\n-server")
	resp, _ := do(t, "GET", url+"/", nil)
	if got := resp.Header.Get("x-upstream-x-edge"); got != "fra-1" {
		t.Errorf("upstream saw x-edge %q", got)
	}
	if got := resp.Header.Get("x-edge"); got != "fra-1" {
		t.Errorf("response x-edge %q", got)
	}
	if resp.Header.Get("server") != "" {
		t.Error("server header not removed from the response")
	}
}

func TestRewrite(t *testing.T) {
	t.Parallel()
	url := example(t, "rewrite", []any{map[string]any{"from": "/api/v1/", "to": "/v1/"}})
	resp, _ := do(t, "GET", url+"/api/v1/users?id=7", nil)
	if got := resp.Header.Get("x-upstream-uri"); got != "/v1/users?id=7" {
		t.Errorf("upstream URI %q, want /v1/users?id=7", got)
	}
	resp, _ = do(t, "GET", url+"/other", nil)
	if got := resp.Header.Get("x-upstream-uri"); got != "/other" {
		t.Errorf("unmatched URI became %q", got)
	}
}

func TestAPIKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.txt")
	if err := os.WriteFile(keys, []byte("# staff\nk-123\nk-456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := example(t, "apikey", map[string]any{"keys_file": keys})
	for key, want := range map[string]int{"": 401, "wrong": 401, "k-456": 200} {
		resp, _ := do(t, "GET", url+"/", map[string]string{"x-api-key": key})
		if resp.StatusCode != want {
			t.Errorf("key %q: status %d, want %d", key, resp.StatusCode, want)
		}
		if want == 200 && resp.Header.Get("x-upstream-x-api-key") != "" {
			t.Error("the key went upstream")
		}
	}
}

func hs256(t *testing.T, secret, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claims))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(head))
	return head + "." + enc.EncodeToString(mac.Sum(nil))
}

func TestJWT(t *testing.T) {
	t.Parallel()
	url := example(t, "jwt", map[string]any{"secret": "s3cret", "issuer": "perigee"})
	future, past := time.Now().Add(time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
	cases := map[string]struct {
		token string
		want  int
	}{
		"valid":        {hs256(t, "s3cret", fmt.Sprintf(`{"sub":"ann","iss":"perigee","exp":%d}`, future)), 200},
		"expired":      {hs256(t, "s3cret", fmt.Sprintf(`{"sub":"ann","iss":"perigee","exp":%d}`, past)), 401},
		"wrong secret": {hs256(t, "guess", fmt.Sprintf(`{"sub":"ann","iss":"perigee","exp":%d}`, future)), 401},
		"wrong issuer": {hs256(t, "s3cret", fmt.Sprintf(`{"sub":"ann","iss":"evil","exp":%d}`, future)), 401},
		"garbage":      {"a.b.c", 401},
		"none":         {"", 401},
	}
	for name, c := range cases {
		resp, _ := do(t, "GET", url+"/", map[string]string{"authorization": "Bearer " + c.token, "x-jwt-sub": "forged"})
		if resp.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d", name, resp.StatusCode, c.want)
		}
		if c.want == 200 && resp.Header.Get("x-upstream-x-jwt-sub") != "ann" {
			t.Errorf("%s: upstream subject %q", name, resp.Header.Get("x-upstream-x-jwt-sub"))
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	url := example(t, "redact", map[string]any{"fields": []any{"password", "SSN"}})
	resp, body := do(t, "GET", url+"/", nil)
	want := `{"cards":[{"ssn":"[redacted]"}],"password":"[redacted]","user":"ann"}`
	if body != want {
		t.Errorf("body %s, want %s", body, want)
	}
	if resp.ContentLength != int64(len(want)) {
		t.Errorf("content-length %d for a %d-byte body", resp.ContentLength, len(want))
	}
}

func TestDenyList(t *testing.T) {
	t.Parallel()
	url := example(t, "denylist", map[string]any{"countries": []any{"KP"}, "networks": []any{"10.9.0.0/16"}})
	if resp, _ := do(t, "GET", url+"/", map[string]string{"x-perigee-country": "kp"}); resp.StatusCode != 403 {
		t.Errorf("denied country: status %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", url+"/", map[string]string{"x-perigee-country": "DE"}); resp.StatusCode != 200 {
		t.Errorf("allowed country: status %d", resp.StatusCode)
	}
	loopback := example(t, "denylist", map[string]any{"networks": []any{"127.0.0.0/8"}})
	if resp, _ := do(t, "GET", loopback+"/", nil); resp.StatusCode != 403 {
		t.Errorf("denied network: status %d", resp.StatusCode)
	}
}

func TestWAT(t *testing.T) {
	t.Parallel()
	url := example(t, "wat", nil)
	if resp, _ := do(t, "GET", url+"/healthz", nil); resp.StatusCode != 204 {
		t.Errorf("/healthz: status %d, want 204", resp.StatusCode)
	}
	resp, body := do(t, "GET", url+"/x", nil)
	if resp.Header.Get("x-powered-by") != "perigee-wat" || !strings.Contains(body, "ann") {
		t.Errorf("passthrough: %v %q", resp.Header, body)
	}
}

// A config the guest cannot follow whole stops it from loading, with the
// reason in the log: serving with the rest would drop a header the
// operator meant removed, send paths unrewritten, or deny or mask nothing
// for a misspelt key.
func TestBadConfigStopsLoading(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		config any
		want   string
	}{
		{"addheader", "x-edge: fra-1\nx-debug fra-1", "x-debug fra-1"},
		{"addheader", "x edge: fra-1", "x edge"},
		{"addheader", "x-edge: a\tb\x01", "x-edge"},
		{"addheader", "-", "is not a header name"},
		// The host frames the message: a guest's length went out beside
		// the backend's.
		{"addheader", "content-length: 5", "may not set content-length"},
		{"addheader", "Transfer-Encoding: chunked", "may not set Transfer-Encoding"},
		{"rewrite", map[string]any{"from": "/a/", "to": "/b/"}, "JSON list"},
		{"rewrite", []any{map[string]any{"form": "/a/", "to": "/b/"}}, `unknown field "form"`},
		{"denylist", map[string]any{"network": []any{"10.9.0.0/16"}}, `unknown field "network"`},
		{"denylist", "KP", "config is not JSON"},
		{"redact", map[string]any{"field": []any{"password"}}, `unknown field "field"`},
		{"jwt", map[string]any{"secert": "s3cret"}, `unknown field "secert"`},
		{"jwt", map[string]any{"issuer": "perigee"}, "needs a secret"},
		{"apikey", map[string]any{"key": "k-123"}, `unknown field "key"`},
		{"rewrite", []any{map[string]any{"from": "a/", "to": "/b/"}}, "from: a/"},
		{"rewrite", []any{map[string]any{"from": "/a/", "to": "b/"}}, "to: b/"},
	} {
		refusesToLoad(t, c.name, c.config, c.want)
	}
}

// A header the backend also sends keeps the backend's value unless a
// removal of it comes first: then the rule's value replaces it.
func TestAddHeaderOverridesTheBackendAfterARemoval(t *testing.T) {
	t.Parallel()
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-frame-options", "ALLOWALL")
		w.Header().Set("x-edge", "backend")
		io.WriteString(w, "hi")
	})
	url := exampleBefore(t, "addheader", "-x-frame-options\nx-frame-options: DENY\nx-edge: fra-1", backend)
	resp, _ := do(t, "GET", url+"/", nil)
	if got := resp.Header.Values("x-frame-options"); len(got) != 1 || got[0] != "DENY" {
		t.Errorf("x-frame-options %q, want DENY", got)
	}
	if got := resp.Header.Values("x-edge"); len(got) != 1 || got[0] != "backend" {
		t.Errorf("x-edge %q, want the backend's", got)
	}
}
