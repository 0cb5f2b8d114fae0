package wasm

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"perigee/runtime/wasm/meter"
)

// Host compiles and runs transforms. One Host serves a whole node; it owns
// the compilation cache that every transform's runtime shares.
type Host struct {
	node       Node
	dispatcher Dispatcher
	shared     *shared
	metrics    *guestMetrics
	cache      wazero.CompilationCache
	guard      *cacheGuard // nil when the cache is in memory only
	logger     *slog.Logger
}

// Options configure a Host.
type Options struct {
	// CacheDir keeps compiled code on disk so a restart does not recompile.
	// Entries are sealed with a key kept there (cache.key, mode 0600); one
	// that fails its check is removed and the module compiled again.
	// Empty keeps the cache in memory only.
	CacheDir string
	// CacheMaxBytes bounds CacheDir: past it, the entries of the modules
	// loaded longest ago are removed, never the one being loaded. 0 is
	// DefaultCacheMaxBytes.
	CacheMaxBytes int64
	// Logger receives guest logs and pool events; nil discards them.
	Logger *slog.Logger
	// Node is what proxy-wasm guests read as the node.id and
	// node.locality.region properties.
	Node Node
	// Dispatcher sends proxy-wasm filters' dispatched HTTP calls; nil
	// refuses them (BAD_ARGUMENT).
	Dispatcher Dispatcher
	// Registerer gets the metrics proxy-wasm filters define; nil keeps
	// them unexported (filters can still read them).
	Registerer prometheus.Registerer
}

// Node describes the node guests run on.
type Node struct{ ID, Region string }

// NewHost returns a Host using opts.
func NewHost(opts Options) (*Host, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h := &Host{cache: wazero.NewCompilationCache(), logger: logger, node: opts.Node, dispatcher: opts.Dispatcher,
		shared: newShared(), metrics: newGuestMetrics()}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(h.metrics); err != nil {
			return nil, fmt.Errorf("register wasm guest metrics: %w", err)
		}
	}
	if opts.CacheDir != "" {
		var err error
		if h.cache, err = wazero.NewCompilationCacheWithDir(opts.CacheDir); err != nil {
			return nil, fmt.Errorf("wasm compilation cache %s: %w", opts.CacheDir, err)
		}
		if h.guard, err = openCacheGuard(opts.CacheDir, cmp.Or(opts.CacheMaxBytes, DefaultCacheMaxBytes), logger); err != nil {
			return nil, fmt.Errorf("wasm compilation cache %s: %w", opts.CacheDir, err)
		}
	}
	return h, nil
}

// Close releases the compilation cache. Close every transform first.
func (h *Host) Close(ctx context.Context) error {
	return h.cache.Close(ctx)
}

// Validate checks that wasm is a module this host can run: it compiles, it
// exports handle_request, handle_response and memory with the ABI's
// signatures, and it imports nothing the host does not offer.
func (h *Host) Validate(ctx context.Context, wasm []byte) error {
	rt := h.newRuntime(ctx, DefaultMemoryLimit)
	defer rt.Close(ctx)
	if err := instantiateHostModules(ctx, rt, nil); err != nil {
		return err
	}
	compiled, _, err := h.compileGuest(ctx, rt, wasm, "")
	if err != nil {
		return err
	}
	return compiled.Close(ctx)
}

func (h *Host) newRuntime(ctx context.Context, memoryLimit uint64) wazero.Runtime {
	// No WithCloseOnContextDone: guests are metered (see compileGuest),
	// which bounds them more cheaply and in more cases.
	cfg := wazero.NewRuntimeConfigCompiler().
		WithCompilationCache(h.cache).
		WithMemoryLimitPages(uint32(memoryLimit / pageSize))
	return wazero.NewRuntimeWithConfig(ctx, cfg)
}

// instantiateHostModules adds the two modules guests may import: WASI, whose
// file system, network, arguments and environment are all empty here, and
// http_handler; and the meter's, which only the rewritten module imports.
// t is nil when only validating.
func instantiateHostModules(ctx context.Context, rt wazero.Runtime, t *Transform) error {
	if _, err := wasi_snapshot_preview1.Instantiate(experimental.WithFunctionListenerFactory(ctx, wasiDeadline{}), rt); err != nil {
		return fmt.Errorf("instantiate wasi: %w", err)
	}
	if _, err := rt.NewHostModuleBuilder(meter.ImportModule).NewFunctionBuilder().
		WithGoFunction(api.GoFunc(refuel), nil, []api.ValueType{i64}).
		Export(meter.ImportRefuel).Instantiate(ctx); err != nil {
		return fmt.Errorf("instantiate %s: %w", meter.ImportModule, err)
	}
	if _, err := newABI(t).build(rt.NewHostModuleBuilder(abiModule)).Instantiate(ctx); err != nil {
		return fmt.Errorf("instantiate %s: %w", abiModule, err)
	}
	if _, err := (proxyABI{t}).build(rt.NewHostModuleBuilder(proxyModule)).Instantiate(ctx); err != nil {
		return fmt.Errorf("instantiate %s: %w", proxyModule, err)
	}
	return nil
}

// wasiDeadline does for WASI's functions, which are wazero's, what
// withDeadline does for ours: a guest calling one past its deadline is
// stopped there (a loop of poll_oneoff with 200,000 subscriptions a call
// ran 83 s past a 1 s deadline). A listener is the one hook wazero gives
// into them; only the WASI module has it.
type wasiDeadline struct{}

func (wasiDeadline) NewFunctionListener(api.FunctionDefinition) experimental.FunctionListener {
	return wasiDeadline{}
}

func (wasiDeadline) Before(ctx context.Context, _ api.Module, _ api.FunctionDefinition, _ []uint64, _ experimental.StackIterator) {
	if ctx.Err() != nil {
		panic(errDeadline)
	}
}

func (wasiDeadline) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}

func (wasiDeadline) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}

var errNotWasm = errors.New("not a WebAssembly module")

// compileGuest meters wasm, compiles it and checks its exports and imports
// against the host modules already instantiated in rt, for the ABI asked
// for or, when abi is empty, the one the exports show. It returns the ABI.
func (h *Host) compileGuest(ctx context.Context, rt wazero.Runtime, wasm []byte, abi string) (wazero.CompiledModule, string, error) {
	if len(wasm) < 4 || string(wasm[:4]) != "\x00asm" {
		return nil, "", errNotWasm
	}
	wasm, err := meter.Instrument(wasm)
	if err != nil {
		return nil, "", fmt.Errorf("meter: %w", err)
	}
	var compiled wazero.CompiledModule
	compile := func() (err error) {
		compiled, err = rt.CompileModule(ctx, wasm)
		return err
	}
	if h.guard != nil {
		err = h.guard.compile(sha256.Sum256(wasm), compile)
	} else {
		err = compile()
	}
	if err != nil {
		return nil, "", fmt.Errorf("compile: %w", err)
	}
	if abi, err = detectABI(abi, compiled); err == nil {
		err = checkGuest(rt, compiled, abi)
	}
	if err != nil {
		compiled.Close(ctx)
		return nil, "", err
	}
	return compiled, abi, nil
}

func checkGuest(rt wazero.Runtime, compiled wazero.CompiledModule, abi string) error {
	module := abiModule
	if abi == ABIProxyWasm {
		if err := checkProxyGuest(compiled); err != nil {
			return err
		}
		module = proxyModule
	} else if err := checkHTTPGuest(compiled); err != nil {
		return err
	}
	if mems := compiled.ImportedMemories(); len(mems) > 0 {
		mod, name, _ := mems[0].Import()
		return fmt.Errorf("module imports memory %s.%s; guests must define their own", mod, name)
	}
	for _, imp := range compiled.ImportedFunctions() {
		mod, name, _ := imp.Import()
		if mod == meter.ImportModule {
			continue // added by the meter, which refuses guests importing it
		}
		offered := rt.Module(mod)
		if offered == nil || (mod != module && mod != wasi_snapshot_preview1.ModuleName) {
			return fmt.Errorf("module imports %s.%s: the host offers %s guests only %s and %s", mod, name, abi, module, wasi_snapshot_preview1.ModuleName)
		}
		def, ok := offered.ExportedFunctionDefinitions()[name]
		if !ok {
			return fmt.Errorf("module imports %s.%s, which the host does not offer", mod, name)
		}
		if !sameTypes(def.ParamTypes(), imp.ParamTypes()) || !sameTypes(def.ResultTypes(), imp.ResultTypes()) {
			return fmt.Errorf("module imports %s.%s with signature %s, the host's is %s", mod, name, signature(imp), signature(def))
		}
	}
	return nil
}

func checkHTTPGuest(compiled wazero.CompiledModule) error {
	exports := compiled.ExportedFunctions()
	if err := checkSignature(exports[exportHandleRequest], exportHandleRequest, nil, []api.ValueType{i64}); err != nil {
		return err
	}
	if err := checkSignature(exports[exportHandleResponse], exportHandleResponse, []api.ValueType{i32, i32}, nil); err != nil {
		return err
	}
	if _, ok := compiled.ExportedMemories()["memory"]; !ok {
		return errors.New(`module does not export its memory as "memory"`)
	}
	return nil
}

func checkSignature(def api.FunctionDefinition, name string, params, results []api.ValueType) error {
	if def == nil {
		return fmt.Errorf("module does not export %s", name)
	}
	if !sameTypes(def.ParamTypes(), params) || !sameTypes(def.ResultTypes(), results) {
		return fmt.Errorf("module exports %s with signature %s", name, signature(def))
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func signature(def api.FunctionDefinition) string {
	names := func(ts []api.ValueType) string {
		s := "("
		for i, t := range ts {
			if i > 0 {
				s += ", "
			}
			s += api.ValueTypeName(t)
		}
		return s + ")"
	}
	return names(def.ParamTypes()) + " -> " + names(def.ResultTypes())
}

// fuelSlice is the fuel a metered guest gets each time it runs out: 0.1 to
// 1 ms of work on the benchmark machine (docs/benchmarks.md), so a guest
// comes back to the host (where the Go scheduler and garbage collector can
// reach it, and its deadline is checked) that often, at the cost of one
// host call.
const fuelSlice = 1 << 21

// refuel is the meter's import: it stops a guest whose call is past its
// deadline, and otherwise hands it the next slice.
func refuel(ctx context.Context, stack []uint64) {
	if ctx.Err() != nil {
		panic(errDeadline)
	}
	stack[0] = fuelSlice
}
