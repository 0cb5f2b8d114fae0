//go:build wasip1

// Command apikey lets a request through only when it carries a known API
// key. Its config is JSON:
//
//	{"keys": "k1\nk2\n", "header": "x-api-key"}
//
// keys is one key a line (blank lines and # comments ignored), or a list;
// keys are trimmed and empty ones ignored.
// A node config can name a file instead, keys_file: keys.txt, and the host
// hands its contents over as keys. header defaults to x-api-key. The key
// header is removed before the request goes upstream.
package main

import (
	"crypto/subtle"
	"encoding/json"
	"strings"

	"perigee/modules/internal/guestconfig"
	"perigee/modules/sdk"
)

type config struct {
	Keys   json.RawMessage `json:"keys"`
	Header string          `json:"header"`
}

// loadKeys reads the keys trimmed, without empty ones: a client's header
// value comes trimmed, and an empty key would let in a request with an
// empty header.
func loadKeys(raw json.RawMessage) []string {
	var given []string
	if json.Unmarshal(raw, &given) != nil {
		var text string
		if err := json.Unmarshal(raw, &text); err != nil {
			sdk.Log(sdk.LevelError, "apikey: keys must be a string or a list")
			return nil
		}
		for _, line := range strings.Split(text, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(line), "#") {
				given = append(given, line)
			}
		}
	}
	var keys []string
	for _, k := range given {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// known compares in constant time so response timing does not leak keys.
func known(keys []string, key string) bool {
	found := 0
	for _, k := range keys {
		found |= subtle.ConstantTimeCompare([]byte(k), []byte(key))
	}
	return found == 1
}

func init() {
	var cfg config
	if err := guestconfig.Decode(sdk.Config(), &cfg); err != nil {
		sdk.RefuseToLoad("apikey: config is not JSON of keys and header: " + err.Error())
	}
	if cfg.Header == "" {
		cfg.Header = "x-api-key"
	}
	keys := loadKeys(cfg.Keys)
	sdk.HandleRequest(func(req sdk.Request, resp sdk.Response) sdk.Action {
		key, ok := req.Headers().Get(cfg.Header)
		if !ok || !known(keys, key) {
			resp.SetStatusCode(401)
			resp.Headers().Set("content-type", "text/plain; charset=utf-8")
			resp.Headers().Set("www-authenticate", "ApiKey")
			resp.Body().WriteString("missing or unknown API key\n")
			return sdk.Stop
		}
		req.Headers().Del(cfg.Header)
		return sdk.Continue
	})
}

func main() {}
