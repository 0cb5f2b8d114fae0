//go:build !wasip1

package modules_test

import (
	"net/http"
	"testing"
)

// Keys given as a list are read as the one-a-line text is: trimmed, and
// an empty one is no key; so an empty X-Api-Key never passes. However many
// X-Api-Key fields a request has, only the first is judged and none goes
// upstream.
func TestAPIKeyHostileKeys(t *testing.T) {
	t.Parallel()
	url := example(t, "apikey", map[string]any{"keys": []any{"", " k-123 ", "  "}})
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
