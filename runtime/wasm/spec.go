// Package wasm is Perigee's host for Wasm transforms: it compiles guest
// modules once, keeps a bounded pool of ready instances per module, bounds
// each guest's memory and time, and runs an ordered chain of guests around an
// http.Handler. It implements the http_handler ABI that Traefik and Dapr
// guests are built against and the proxy-wasm ABI of Envoy's filters, so
// modules built for either run unmodified, side by side in one chain.
//
// It knows nothing of routes or services: the caller names the modules, puts
// them in chains and swaps whole sets on reload.
package wasm

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"perigee/files"
)

// Spec is one transform as the host loads it: its settings and what was
// read for them.
type Spec struct {
	// Name identifies the transform in chains, metrics and errors.
	Name string
	// Source says where Wasm came from (a path), for error messages.
	Source string
	// Wasm is the module's binary.
	Wasm []byte
	// Config is what the guest reads with get_config (and a proxy-wasm
	// plugin with proxy_on_configure): Settings.Config encoded, or
	// Settings.Configuration. It shadows Settings.Config.
	Config []byte
	Settings
}

// withDefaults checks s and fills the limits it leaves at zero.
func (s Spec) withDefaults() (Spec, error) {
	if s.Name == "" {
		return s, errors.New("transform has no name")
	}
	if len(s.Wasm) == 0 {
		return s, fmt.Errorf("transform %q: no module", s.Name)
	}
	if err := s.Settings.Validate(); err != nil {
		return s, fmt.Errorf("transform %q: %w", s.Name, err)
	}
	s.Settings = s.Settings.withDefaults()
	return s, nil
}

// fingerprint identifies everything that, when changed, needs new instances.
func (s Spec) fingerprint() [32]byte {
	h := sha256.New()
	h.Write(s.Wasm)
	fmt.Fprintf(h, "\x00%d\x00%d\x00%d\x00%d\x00%d\x00%d\x00%d\x00", len(s.Config), s.Pool, s.MaxPool, s.Memory, s.Timeout.D(), s.InitTimeout.D(), s.MaxBuffer)
	h.Write(s.Config)
	fmt.Fprintf(h, "\x00%s\x00%s\x00%s", s.ABI, s.RootID, s.VMID)
	for _, name := range slices.Sorted(maps.Keys(s.Clusters)) {
		fmt.Fprintf(h, "\x00%q=%q", name, s.Clusters[name])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// MaxConfigFileBytes bounds each file a transform's config names, as the
// node bounds its own config file.
const MaxConfigFileBytes = 16 << 20

// EncodeConfig turns a config value decoded from YAML into get_config bytes:
// a string is passed as its bytes, anything else (a mapping, a list, a
// number) as JSON, and nil as nothing.
//
// Guests have no file system, so in a mapping a key ending in _file names a
// file, read now relative to dir: the guest gets its contents as a string
// under the key without the suffix ({keys_file: keys.txt} arrives as
// {"keys": "<contents of keys.txt>"}). Reloading reads the file again.
// A file over MaxConfigFileBytes, or a path that is no regular file, is an
// error.
func EncodeConfig(v any, dir string) ([]byte, error) {
	switch c := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []byte(c), nil
	case map[string]any:
		expanded := make(map[string]any, len(c))
		for k, val := range c {
			name, isFile := strings.CutSuffix(k, "_file")
			path, isString := val.(string)
			if !isFile || !isString || name == "" {
				expanded[k] = val
				continue
			}
			if !filepath.IsAbs(path) {
				path = filepath.Join(dir, path)
			}
			b, err := files.Read(path, MaxConfigFileBytes)
			if err != nil {
				return nil, fmt.Errorf("transform config %s: %w", k, err)
			}
			expanded[name] = string(b)
		}
		v = expanded
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode transform config as JSON: %w", err)
	}
	return b, nil
}
