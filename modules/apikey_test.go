//go:build !wasip1

package modules_test

import (
	"net/http"
	"strings"
	"testing"
)

// Keys given as a list are trimmed, as the one-a-line text is, and a key
// listed twice is one key. However many X-Api-Key fields a request has,
// only the first is judged and none goes upstream.
func TestAPIKeyHostileKeys(t *testing.T) {
	t.Parallel()
	url := example(t, "apikey", map[string]any{"keys": []any{" k-123 ", "k-123"}})
	cases := map[string]struct {
		values []string
		want   int
	}{
		"empty":                    {[]string{""}, 401},
		"spaces":                   {[]string{"  "}, 401},
		"a listed key":             {[]string{"k-123"}, 200},
		"another case":             {[]string{"K-123"}, 401},
		"a known key second":       {[]string{"wrong", "k-123"}, 401},
		"a known key then another": {[]string{"k-123", "other"}, 200},
	}
	for name, c := range cases {
		req, err := http.NewRequest("GET", url+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header["X-Api-Key"] = c.values
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %q: status %d, want %d", name, c.values, resp.StatusCode, c.want)
		}
		if resp.StatusCode == 200 && resp.Header.Get("x-upstream-x-api-key") != "" {
			t.Errorf("%s: a key went upstream: %q", name, resp.Header.Get("x-upstream-x-api-key"))
		}
	}
}

// Keys the guest cannot follow whole stop it from loading, as the other
// guests' configs do: it used to load with no keys, or without the bad
// ones, and say so only in a log line. A key no header can carry (empty,
// with a control character, longer than a header line) is a mistake in
// the list or the file, never a key a client could send.
func TestAPIKeyRefusesKeysItCannotFollow(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		keys any
		want string
	}{
		{42, "keys must be a string or a list of strings"},
		{map[string]any{"k": "k-123"}, "keys must be a string or a list of strings"},
		{[]any{"k-123", 42}, "keys must be a string or a list of strings"},
		{[]any{"k-123", nil}, "keys must be a string or a list of strings"},
		{[]any{"k-123", ""}, "key 2 is empty"},
		{[]any{"k-123", "  "}, "key 2 is empty"},
		{[]any{"k-1\x00"}, "key 1 has a control character"},
		{"k-123\nk-\x7f456\n", "line 2 has a control character"},
		{[]any{strings.Repeat("k", 8<<10+1)}, "key 1 is over 8192 bytes"},
		{[]any{}, "no keys"},
		{"# nobody yet\n\n", "no keys"},
		{nil, "no keys"},
	} {
		refusesToLoad(t, "apikey", map[string]any{"keys": c.keys}, c.want)
	}
	refusesToLoad(t, "apikey", map[string]any{"header": "x-key"}, "no keys")
	// YAML tells "Keys" from "keys"; encoding/json would take either for
	// the field, the last one given.
	refusesToLoad(t, "apikey", map[string]any{"keys": []any{"k-123"}, "Keys": []any{}}, "given twice")
	// A header no request can carry would refuse every request.
	refusesToLoad(t, "apikey", map[string]any{"keys": "k-123", "header": "x api key"}, `header: "x api key" is no header name`)
}
