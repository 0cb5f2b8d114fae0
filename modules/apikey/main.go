//go:build wasip1

// Command apikey lets a request through only when it carries a known API
// key. Its config is JSON:
//
//	{"keys": "k1\nk2\n", "header": "x-api-key"}
//
// keys is one key a line (blank lines and # comments ignored), or a list
// of strings; keys are trimmed. Keys of any other shape, an empty key in
// a list, a key with a control character or over 8 KiB, or no key at all
// stop the module from loading.
// A node config can name a file instead, keys_file: keys.txt, and the host
// hands its contents over as keys. header defaults to x-api-key. The key
// header is removed before the request goes upstream.
package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"perigee/modules/internal/guestconfig"
	"perigee/modules/sdk"
)

type config struct {
	Keys   json.RawMessage `json:"keys"`
	Header string          `json:"header"`
}

// maxKey bounds a key: nginx's default bound on one header line (8 KiB),
// far past any API key. A longer one is a file given by mistake.
const maxKey = 8 << 10

// loadKeys reads the keys trimmed: a client's header value comes trimmed.
// In the text, blank lines and # comments are no keys; any key that no
// header could carry (empty, with a control character, over maxKey) is
// an error.
func loadKeys(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var text string // null too, as no text
	if json.Unmarshal(raw, &text) == nil {
		var keys []string
		for i, line := range strings.Split(text, "\n") {
			if k := strings.TrimSpace(line); k != "" && !strings.HasPrefix(k, "#") {
				if err := checkKey(k); err != nil {
					return nil, fmt.Errorf("line %d %w", i+1, err)
				}
				keys = append(keys, k)
			}
		}
		return keys, nil
	}
	var given []*string
	if err := json.Unmarshal(raw, &given); err != nil || slices.Contains(given, nil) {
		return nil, errors.New("keys must be a string or a list of strings")
	}
	keys := make([]string, len(given))
	for i, k := range given {
		keys[i] = strings.TrimSpace(*k)
		if err := checkKey(keys[i]); err != nil {
			return nil, fmt.Errorf("key %d %w", i+1, err)
		}
	}
	return keys, nil
}

// checkKey says why no request could carry key, trimmed, in a header.
func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("is empty")
	case len(key) > maxKey:
		return fmt.Errorf("is over %d bytes", maxKey)
	case strings.ContainsFunc(key, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }):
		return errors.New("has a control character")
	}
	return nil
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
	var err error
	if cfg.Header, err = guestconfig.HeaderName("header", cfg.Header, "x-api-key"); err != nil {
		sdk.RefuseToLoad("apikey: " + err.Error())
	}
	keys, err := loadKeys(cfg.Keys)
	if err == nil && len(keys) == 0 {
		err = errors.New("no keys: every request would be refused")
	}
	if err != nil {
		sdk.RefuseToLoad("apikey: " + err.Error())
	}
	var digests [][sha256.Size]byte
	for _, k := range keys {
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
