package wasm

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"perigee/units"
)

// Defaults for the limits Settings leave at zero.
const (
	DefaultPoolSize    = 4
	DefaultMemoryLimit = 64 << 20
	DefaultTimeout     = 100 * time.Millisecond
	DefaultMaxBuffer   = 4 << 20
	DefaultInitTimeout = 10 * time.Second
	// maxInitTimeout bounds InitTimeout: a reload waits up to that long
	// for each transform it loads.
	maxInitTimeout = time.Minute
	// maxPoolSize keeps a typo from instantiating thousands of guests.
	maxPoolSize = 1024
	// minBuffer and maxBuffer bound MaxBuffer: below a kilobyte hardly any
	// body fits; past a gigabyte a few requests take the node's memory.
	minBuffer = 1 << 10
	maxBuffer = 1 << 30
)

const (
	pageSize  = 65536
	maxMemory = 65536 * pageSize // 4 GiB, the wasm32 address space
)

// Settings are one transform's settings as a config file gives them: the
// module, its guest config and the limits its instances run under.
type Settings struct {
	// Module is the path of the .wasm file.
	Module string `yaml:"module" json:"module"`
	// Config is the guest config as decoded from YAML; EncodeConfig turns
	// it into what get_config returns.
	Config any `yaml:"config" json:"config,omitempty"`
	// Pool is the number of instances made at load and kept ready.
	Pool int `yaml:"pool" json:"pool"`
	// MaxPool is the most instances the pool grows to while every one is
	// busy (an http-wasm request holds one until handle_response); it
	// bounds the requests inside the transform at once, and with Memory
	// its memory. 0 is Pool: no growth.
	MaxPool int `yaml:"max_pool" json:"max_pool,omitempty"`
	// Memory caps each instance's linear memory.
	Memory units.ByteSize `yaml:"memory" json:"memory"`
	// Timeout bounds each guest call, and getting an instance: starting
	// one the pool grows for a request, then waiting for a free one.
	Timeout units.Duration `yaml:"timeout" json:"timeout"`
	// InitTimeout bounds starting instances (their start functions, a
	// proxy-wasm root context's start): at load, the whole pool's starts
	// together; replacing a broken instance, its start; growing the pool
	// for a request, its start, within Timeout too.
	InitTimeout units.Duration `yaml:"init_timeout" json:"init_timeout,omitempty"`
	// MaxBuffer caps what the host holds per request for the guest: a
	// buffered request body, a held response, a body the guest writes, the
	// headers the guest sets.
	MaxBuffer units.ByteSize `yaml:"max_buffer" json:"max_buffer"`
	// ABI is ABIHTTPWasm or ABIProxyWasm; empty detects it from the
	// module's exports.
	ABI string `yaml:"abi" json:"abi,omitempty"`
	// RootID and Configuration are a proxy-wasm plugin's, as in Envoy's
	// plugin config; Configuration goes to proxy_on_configure.
	RootID string `yaml:"root_id" json:"root_id,omitempty"`
	// VMID is Envoy's vm_config.vm_id: the namespace of the shared queues
	// the filter registers, which filters of other vm_ids resolve by it.
	VMID          string `yaml:"vm_id" json:"vm_id,omitempty"`
	Configuration string `yaml:"configuration" json:"configuration,omitempty"`
	// Clusters maps the cluster names a proxy-wasm filter may call with
	// proxy_http_call to the node's services.
	Clusters map[string]string `yaml:"clusters" json:"clusters,omitempty"`
}

// Validate reports every problem, each as "field: what" so that the config
// can name the line. Zero limits are valid: withDefaults fills them.
func (s Settings) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if s.Pool < 0 || s.Pool > maxPoolSize {
		bad("pool", "pool must be 0..%d, got %d", maxPoolSize, s.Pool)
	}
	if pool := cmp.Or(s.Pool, DefaultPoolSize); s.MaxPool < 0 || s.MaxPool > maxPoolSize {
		bad("max_pool", "max_pool must be 0..%d, got %d", maxPoolSize, s.MaxPool)
	} else if s.MaxPool != 0 && s.MaxPool < pool {
		bad("max_pool", "max_pool %d is below pool %d", s.MaxPool, pool)
	}
	if s.Memory != 0 && (s.Memory < pageSize || s.Memory > maxMemory) {
		bad("memory", "memory must be 64KiB..4GiB, got %d bytes", s.Memory)
	}
	if s.Timeout < 0 {
		bad("timeout", "negative timeout %s", s.Timeout.D())
	}
	if s.InitTimeout != 0 && (s.InitTimeout.D() < time.Millisecond || s.InitTimeout.D() > maxInitTimeout) {
		bad("init_timeout", "init_timeout must be 1ms..%s, got %s", maxInitTimeout, s.InitTimeout.D())
	}
	if s.MaxBuffer != 0 && (s.MaxBuffer < minBuffer || s.MaxBuffer > maxBuffer) {
		bad("max_buffer", "max_buffer must be 1KiB..1GiB, got %d bytes", s.MaxBuffer)
	}
	if s.ABI != "" && s.ABI != ABIHTTPWasm && s.ABI != ABIProxyWasm {
		bad("abi", "abi must be %s or %s (unknown abi %q)", ABIHTTPWasm, ABIProxyWasm, s.ABI)
	}
	if s.Configuration != "" && s.Config != nil {
		bad("configuration", "set config (http-wasm) or configuration (proxy-wasm), not both")
	}
	return errors.Join(errs...)
}

// withDefaults fills the limits s leaves at zero.
func (s Settings) withDefaults() Settings {
	if s.Pool == 0 {
		s.Pool = DefaultPoolSize
	}
	s.MaxPool = max(s.MaxPool, s.Pool)
	if s.Memory == 0 {
		s.Memory = DefaultMemoryLimit
	}
	if s.Timeout == 0 {
		s.Timeout = units.Duration(DefaultTimeout)
	}
	if s.MaxBuffer == 0 {
		s.MaxBuffer = DefaultMaxBuffer
	}
	if s.InitTimeout == 0 {
		s.InitTimeout = units.Duration(DefaultInitTimeout)
	}
	return s
}
