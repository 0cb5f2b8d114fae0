package admin

import (
	"encoding/json"
	"net/url"
	"regexp"
	"strings"
)

// Redacted stands in for every value GET /config must not show.
const Redacted = "<redacted>"

// secretKey names a field that holds a secret: a webhook's HMAC secret, a
// bearer token, a password, a keyring. A field naming a file that holds one
// (token_file, KeyringFile) is a path, and shown.
var secretKey = regexp.MustCompile(`(?i)secret|token|passw|keyring|credential|api_?key|private`)

// Redact returns v as generic JSON with secrets replaced: every value of a
// field secretKey matches, and every leaf of a transform's guest config
// (the guest alone knows which of its keys are secret: apikey's keys,
// jwt's secret). The rule is by name, so a setting added later is covered.
func Redact(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		return map[string]string{"error": err.Error()}
	}
	if m, ok := doc.(map[string]any); ok {
		if ts, ok := m["transforms"].(map[string]any); ok {
			for _, t := range ts {
				if t, ok := t.(map[string]any); ok && t["config"] != nil {
					t["config"] = redactAll(t["config"])
				}
			}
		}
	}
	return redactKeys(doc)
}

func redactKeys(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			lk := strings.ToLower(k)
			if secretKey.MatchString(k) && !strings.HasSuffix(lk, "file") && e != nil && e != "" {
				v[k] = Redacted
			} else {
				v[k] = redactKeys(e)
			}
		}
	case []any:
		for i, e := range v {
			v[i] = redactKeys(e)
		}
	case string:
		return redactURL(v)
	}
	return v
}

// redactURL hides what a URL carries that no field name says is secret:
// its userinfo (https://user:pass@host/, which Go's client sends as Basic
// auth, or a token written as the user), and the values of its query
// parameters secretKey matches (?access_token=...). Any other string is
// returned as it is.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" || (u.User == nil && u.RawQuery == "") {
		return s
	}
	hadUser := u.User != nil
	u.User = nil
	changed := hadUser
	if u.RawQuery != "" {
		params := strings.Split(u.RawQuery, "&")
		for i, kv := range params {
			k, _, _ := strings.Cut(kv, "=")
			if name, err := url.QueryUnescape(k); err == nil && secretKey.MatchString(name) {
				params[i], changed = k+"="+Redacted, true
			}
		}
		u.RawQuery = strings.Join(params, "&")
	}
	if !changed {
		return s
	}
	out := u.String()
	if hadUser {
		scheme, rest, _ := strings.Cut(out, "://")
		out = scheme + "://" + Redacted + "@" + rest
	}
	return out
}

// redactAll keeps v's shape and replaces every leaf.
func redactAll(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = redactAll(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = redactAll(e)
		}
		return v
	}
	return Redacted
}
