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
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Defaults for the limits a Spec leaves at zero.
const (
	DefaultPoolSize    = 4
	DefaultMemoryLimit = 64 << 20
	DefaultTimeout     = 100 * time.Millisecond
	DefaultMaxBuffer   = 4 << 20
	// maxPoolSize keeps a typo from instantiating thousands of guests.
	maxPoolSize = 1024
	// minBuffer and maxBuffer bound MaxBuffer: below a kilobyte hardly any
	// body fits; past a gigabyte a few requests take the node's memory.
	minBuffer = 1 << 10
	maxBuffer = 1 << 30
)

// Spec describes one transform: the module, the bytes get_config returns and
// the limits its instances run under.
type Spec struct {
	// Name identifies the transform in chains, metrics and errors.
	Name string
	// Source says where Wasm came from (a path), for error messages.
	Source string
	// Wasm is the module's binary.
	Wasm []byte
	// Config is what the guest reads with get_config.
	Config []byte
	// PoolSize is the number of ready instances; it bounds concurrency.
	PoolSize int
	// MemoryLimit caps each instance's linear memory, in bytes.
	MemoryLimit uint64
	// Timeout bounds each guest call and the wait for a free instance.
	Timeout time.Duration
	// MaxBuffer caps what the host holds per request for the guest: a
	// buffered request body, a held response, a body the guest writes.
	MaxBuffer uint64
	// ABI is ABIHTTPWasm or ABIProxyWasm; empty detects it from the
	// module's exports.
	ABI string
	// RootID is a proxy-wasm plugin's root_id, as in Envoy's plugin config.
	// Config is its plugin configuration (proxy_on_configure).
	RootID string
	// Clusters maps the cluster names a proxy-wasm filter may call with
	// proxy_http_call to the node's services.
	Clusters map[string]string
}

// withDefaults fills the zero limits and checks the rest.
func (s Spec) withDefaults() (Spec, error) {
	if s.Name == "" {
		return s, errors.New("transform has no name")
	}
	if len(s.Wasm) == 0 {
		return s, fmt.Errorf("transform %q: no module", s.Name)
	}
	if s.PoolSize == 0 {
		s.PoolSize = DefaultPoolSize
	}
	if s.PoolSize < 0 || s.PoolSize > maxPoolSize {
		return s, fmt.Errorf("transform %q: pool size %d out of range 1..%d", s.Name, s.PoolSize, maxPoolSize)
	}
	if s.MemoryLimit == 0 {
		s.MemoryLimit = DefaultMemoryLimit
	}
	if s.MemoryLimit < pageSize || s.MemoryLimit > maxMemory {
		return s, fmt.Errorf("transform %q: memory limit %d bytes out of range %d..%d", s.Name, s.MemoryLimit, pageSize, uint64(maxMemory))
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.Timeout < 0 {
		return s, fmt.Errorf("transform %q: negative timeout %s", s.Name, s.Timeout)
	}
	if s.ABI != "" && s.ABI != ABIHTTPWasm && s.ABI != ABIProxyWasm {
		return s, fmt.Errorf("transform %q: unknown abi %q (want %s or %s)", s.Name, s.ABI, ABIHTTPWasm, ABIProxyWasm)
	}
	if s.MaxBuffer == 0 {
		s.MaxBuffer = DefaultMaxBuffer
	}
	if s.MaxBuffer < minBuffer || s.MaxBuffer > maxBuffer {
		return s, fmt.Errorf("transform %q: max buffer %d bytes out of range %d..%d", s.Name, s.MaxBuffer, minBuffer, maxBuffer)
	}
	return s, nil
}

const (
	pageSize  = 65536
	maxMemory = 65536 * pageSize // 4 GiB, the wasm32 address space
)

// fingerprint identifies everything that, when changed, needs new instances.
func (s Spec) fingerprint() [32]byte {
	h := sha256.New()
	h.Write(s.Wasm)
	fmt.Fprintf(h, "\x00%d\x00%d\x00%d\x00%d\x00%d\x00", len(s.Config), s.PoolSize, s.MemoryLimit, s.Timeout, s.MaxBuffer)
	h.Write(s.Config)
	fmt.Fprintf(h, "\x00%s\x00%s", s.ABI, s.RootID)
	for _, name := range slices.Sorted(maps.Keys(s.Clusters)) {
		fmt.Fprintf(h, "\x00%q=%q", name, s.Clusters[name])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// EncodeConfig turns a config value decoded from YAML into get_config bytes:
// a string is passed as its bytes, anything else (a mapping, a list, a
// number) as JSON, and nil as nothing.
//
// Guests have no file system, so in a mapping a key ending in _file names a
// file, read now relative to dir: the guest gets its contents as a string
// under the key without the suffix ({keys_file: keys.txt} arrives as
// {"keys": "<contents of keys.txt>"}). Reloading reads the file again.
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
			b, err := os.ReadFile(path)
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
