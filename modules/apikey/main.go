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
	"crypto/sha256"
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
// It compares digests: ConstantTimeCompare returns at once on a length
// that differs, which would tell a client each key's length.
func known(digests [][sha256.Size]byte, key string) bool {
	found, sum := 0, sha256.Sum256([]byte(key))
	for _, d := range digests {
		found |= subtle.ConstantTimeCompare(d[:], sum[:])
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
	var digests [][sha256.Size]byte
	for _, k := range loadKeys(cfg.Keys) {
		digests = append(digests, sha256.Sum256([]byte(k)))
	}
	sdk.HandleRequest(func(req sdk.Request, resp sdk.Response) sdk.Action {
		key, ok := req.Headers().Get(cfg.Header)
		if !ok || !known(digests, key) {
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
