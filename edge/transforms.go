package edge

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"perigee/edge/config"
	"perigee/runtime/wasm"
)

// loadTransforms compiles the config's Wasm modules into a set, reusing
// prev's unchanged transforms. On error prev keeps serving untouched.
func (n *Node) loadTransforms(ctx context.Context, cfg *config.Config, prev *wasm.Set) (*wasm.Set, error) {
	if len(cfg.Transforms) == 0 && prev == nil {
		return nil, nil
	}
	specs := make([]wasm.Spec, 0, len(cfg.Transforms))
	for name, t := range cfg.Transforms {
		at := cfg.Pos("transforms", name, "module")
		bin, err := os.ReadFile(t.Module)
		if err != nil {
			return nil, fmt.Errorf("%s: transform %q: %w", at, name, err)
		}
		guestCfg, err := wasm.EncodeConfig(t.Config, ".")
		if err != nil {
			return nil, fmt.Errorf("%s: transform %q config: %w", cfg.Pos("transforms", name, "config"), name, err)
		}
		specs = append(specs, wasm.Spec{
			Name: name, Source: t.Module, Wasm: bin, Config: guestCfg,
			PoolSize: t.Pool, MemoryLimit: uint64(t.Memory), Timeout: t.Timeout.D(),
		})
	}
	host, err := n.wasmHost()
	if err != nil {
		return nil, err
	}
	set, err := host.LoadSet(ctx, specs, prev)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Pos("transforms"), err)
	}
	return set, nil
}

// wasmHost starts the Wasm runtime on first use; its compilation cache lives
// under the user's cache directory so a restart does not recompile.
func (n *Node) wasmHost() (*wasm.Host, error) {
	n.hostOnce.Do(func() {
		dir := ""
		if base, err := os.UserCacheDir(); err == nil {
			dir = filepath.Join(base, "perigee", "wasm")
		}
		n.host, n.hostErr = wasm.NewHost(wasm.Options{CacheDir: dir, Logger: n.log.With("component", "wasm")})
	})
	return n.host, n.hostErr
}
