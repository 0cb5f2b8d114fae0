package mesh

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"

	"perigee/files"
)

// maxKeyringBytes bounds what is read of a keyring file: a thousand keys
// with comments fit, and a path naming a huge file or a device is refused.
const maxKeyringBytes = 64 << 10

// ParseKeyring reads gossip keys, base64 one a line; blank lines and lines
// starting with # are skipped. The first key encrypts, all of them decrypt,
// which is what lets a key be rotated in without a flag day (docs/mesh.md).
// Keys must be 16, 24 or 32 bytes (AES-128, -192, -256).
func ParseKeyring(path string) ([][]byte, error) {
	b, err := files.Read(path, maxKeyringBytes)
	if errors.As(err, new(*files.TooLargeError)) {
		return nil, fmt.Errorf("%s: over %d KiB; a keyring is a few lines of base64 keys", path, maxKeyringBytes>>10)
	}
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

// ReloadKeyring rereads the keyring file and brings the running node's keys
// to it: new keys are installed, the file's first key becomes the one that
// encrypts, and keys no longer listed are removed. Rotation is then three
// edits of the file, each followed by a reload on every node (docs/mesh.md).
// On any error the keys in use are left as they were.
func (c *Cluster) ReloadKeyring() error {
	if c.keyring == nil {
		return errors.New("mesh.keyring: this node started without a keyring; encryption cannot be turned on without a restart")
	}
	keys, err := ParseKeyring(c.cfg.KeyringFile)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := c.keyring.AddKey(k); err != nil {
			return fmt.Errorf("mesh.keyring: %w", err)
		}
	}
	if err := c.keyring.UseKey(keys[0]); err != nil {
		return fmt.Errorf("mesh.keyring: %w", err)
	}
	for _, old := range c.keyring.GetKeys() {
		if !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, old) }) {
			if err := c.keyring.RemoveKey(old); err != nil {
				return fmt.Errorf("mesh.keyring: %w", err)
			}
		}
	}
	c.log.Info("gossip keyring reloaded", "keys", len(keys))
	return nil
}
