//go:build !wasip1

package modules_test

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

type encoding int

const (
	identity    encoding = iota
	gzipIfAsked          // as a backend behind a compressing middleware
	gzipAlways
)

// jsonBackend answers body with content type ct, encoded as enc says.
func jsonBackend(ct, body string, enc encoding) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", ct)
		if enc == identity || enc == gzipIfAsked && !strings.Contains(r.Header.Get("accept-encoding"), "gzip") {
			io.WriteString(w, body)
			return
		}
		w.Header().Set("content-encoding", "gzip")
		zw := gzip.NewWriter(w)
		io.WriteString(zw, body)
		zw.Close()
	})
}

// plain is the body a client reads, gunzipped if it came encoded.
func plain(t *testing.T, resp *http.Response, body string) string {
	t.Helper()
	if resp.Header.Get("content-encoding") != "gzip" {
		return body
	}
	zr, err := gzip.NewReader(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const secretDoc = `{"user":"ann","password":"hunter2"}`

// A client that asks for gzip must not get the fields unmasked because the
// guest could not read a compressed body.
func TestRedactCompressedBody(t *testing.T) {
	t.Parallel()
	cfg := map[string]any{"fields": []any{"password"}}
	url := exampleBefore(t, "redact", cfg, jsonBackend("application/json", secretDoc, gzipIfAsked))
	resp, body := do(t, "GET", url+"/", map[string]string{"accept-encoding": "gzip"})
	if got := plain(t, resp, body); resp.StatusCode != 200 || strings.Contains(got, "hunter2") {
		t.Errorf("client asking for gzip: %d %q", resp.StatusCode, got)
	}
	url = exampleBefore(t, "redact", cfg, jsonBackend("application/json", secretDoc, gzipAlways))
	resp, body = do(t, "GET", url+"/", map[string]string{"accept-encoding": "gzip"})
	if got := plain(t, resp, body); resp.StatusCode != 502 || strings.Contains(got, "hunter2") {
		t.Errorf("backend that always gzips: %d %q, want 502 without the field", resp.StatusCode, got)
	}
}

// Media types are case-insensitive (RFC 9110 §8.3.1), and JSON comes under
// several names.
func TestRedactContentTypeSpellings(t *testing.T) {
	t.Parallel()
	for _, ct := range []string{"Application/JSON", "APPLICATION/JSON; charset=UTF-8", "application/problem+json", "application/x-ndjson"} {
		url := exampleBefore(t, "redact", map[string]any{"fields": []any{"password"}}, jsonBackend(ct, secretDoc, identity))
		if resp, body := do(t, "GET", url+"/", nil); strings.Contains(body, "hunter2") {
			t.Errorf("content type %q: %d %q", ct, resp.StatusCode, body)
		}
	}
}

// A body typed as JSON that the guest cannot parse whole is refused, not
// passed unmasked; a sequence of values (NDJSON) is masked value by value;
// numbers keep every digit.
func TestRedactBodiesItCannotParse(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", 20000) + secretDoc + strings.Repeat("]", 20000)
	cases := map[string]struct {
		body, want string
		status     int
	}{
		"nested past the parser's depth": {deep, "", 502},
		"trailing garbage":               {secretDoc + ` x`, "", 502},
		"truncated":                      {`{"password":"hunter2"`, "", 502},
		"a sequence of values":           {secretDoc + "\n" + secretDoc + "\n", `{"password":"[redacted]","user":"ann"}` + "\n" + `{"password":"[redacted]","user":"ann"}` + "\n", 200},
		"big numbers":                    {`{"id":12345678901234567890,"f":1.10,"password":1}`, `{"f":1.10,"id":12345678901234567890,"password":"[redacted]"}`, 200},
		"empty":                          {"", "", 200},
	}
	for name, c := range cases {
		url := exampleBefore(t, "redact", map[string]any{"fields": []any{"password"}}, jsonBackend("application/json", c.body, identity))
		resp, body := do(t, "GET", url+"/", nil)
		if resp.StatusCode != c.status || strings.Contains(body, "hunter2") || (c.status == 200 && body != c.want) {
			t.Errorf("%s: %d %.200q, want %d %q", name, resp.StatusCode, body, c.status, c.want)
		}
	}
}

// A Range request would have the backend send a slice of the document: a
// JSON fragment that parses on its own ("hunter2"), or several in a
// multipart/byteranges body the guest does not read as JSON.
func TestRedactRangeRequests(t *testing.T) {
	t.Parallel()
	file := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		http.ServeContent(w, r, "doc.json", time.Time{}, strings.NewReader(secretDoc))
	})
	url := exampleBefore(t, "redact", map[string]any{"fields": []any{"password"}}, file)
	at := strings.Index(secretDoc, `"hunter2"`)
	for _, ranges := range []string{fmt.Sprintf("bytes=%d-%d", at, at+len(`"hunter2"`)-1), fmt.Sprintf("bytes=0-1,%d-%d", at, at+8)} {
		resp, body := do(t, "GET", url+"/", map[string]string{"range": ranges})
		if resp.StatusCode != 200 || body != `{"password":"[redacted]","user":"ann"}` {
			t.Errorf("range %s: %d %q, want the whole document masked", ranges, resp.StatusCode, body)
		}
	}
	// A backend that answers a range nobody asked for.
	slice := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		w.Header().Set("content-range", fmt.Sprintf("bytes %d-%d/%d", at, at+8, len(secretDoc)))
		w.WriteHeader(http.StatusPartialContent)
		io.WriteString(w, `"hunter2"`)
	})
	url = exampleBefore(t, "redact", map[string]any{"fields": []any{"password"}}, slice)
	if resp, body := do(t, "GET", url+"/", nil); resp.StatusCode != 502 || strings.Contains(body, "hunter2") {
		t.Errorf("unasked 206: %d %q, want 502", resp.StatusCode, body)
	}
}
