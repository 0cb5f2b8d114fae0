package mesh

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
)

// ParseKeyring reads gossip keys, base64 one a line; blank lines and lines
// starting with # are skipped. The first key encrypts, all of them decrypt,
// which is what lets a key be rotated in without a flag day (docs/mesh.md).
// Keys must be 16, 24 or 32 bytes (AES-128, -192, -256).
func ParseKeyring(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mesh.keyring: %w", err)
	}
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(string(text))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: key is not valid base64: %w", path, line, err)
		}
		switch len(key) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("%s:%d: key is %d bytes, want 16, 24 or 32", path, line, len(key))
		}
		keys = append(keys, key)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no keys", path)
	}
	return keys, nil
}
