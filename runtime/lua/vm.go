// Package lua is a sandboxed Lua 5.1 virtual machine built on gopher-lua.
// It loads scripts, calls their functions with a deadline and an allocation
// budget, and converts values between Go and Lua. It knows nothing of what
// the scripts are for.
package lua

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"weak"

	glua "github.com/yuin/gopher-lua"

	"perigee/clip"
)

// Limits bound what one call into the VM may consume, and what the VM
// keeps between calls. Go code inside the builtins is held to the same
// deadline and budget as the script's own instructions.
type Limits struct {
	// Timeout is the deadline of one Load or Call; zero means only the
	// caller's context bounds it.
	Timeout time.Duration
	// AllocBytes is the allocation budget of one Load or Call, measured
	// over the whole process while the call runs, so it errs on the side
	// of stopping a script. It also bounds what the state holds after a
	// call (see VM). Zero means DefaultAllocBytes.
	AllocBytes uint64
	// CallDepth bounds recursion; zero means DefaultCallDepth.
	CallDepth int
	// StackSlots bounds the value stack; zero means DefaultStackSlots.
	StackSlots int
	// StringBytes bounds every string a script builds: with `..`,
	// string.rep, string.format, string.gsub, table.concat or print; zero
	// means DefaultStringBytes.
	StringBytes int
	// SourceBytes bounds a script, a module and a chunk given to
	// loadstring or load; zero means DefaultSourceBytes.
	SourceBytes int
	// ConvertNodes and ConvertBytes bound a value converted to Go (the
	// arguments of a registered function, the results of a call, a
	// global), counting each slot of a table a value; zero means
	// DefaultConvertNodes and DefaultConvertBytes.
	ConvertNodes int
	ConvertBytes int
}

// Defaults for the zero values of Limits.
const (
	DefaultAllocBytes   = 64 << 20
	DefaultCallDepth    = 200
	DefaultStackSlots   = 256 << 10
	DefaultStringBytes  = 1 << 20
	DefaultSourceBytes  = 64 << 10
	DefaultConvertNodes = 100_000
	DefaultConvertBytes = 4 << 20
)

// Options configure a VM.
type Options struct {
	Limits Limits
	// Now is the clock behind os.time, os.clock and os.date; nil means
	// time.Now. A simulator passes its simulated clock.
	Now func() time.Time
	// Modules are the only sources `require(name)` may load.
	Modules map[string]string
	// Print receives what the script prints; nil discards it.
	Print func(msg string)
}

// Func is a Go function callable from Lua. Its arguments are converted to
// Go within the conversion limits and its results with ToLua; a returned
// error, or arguments over the limits, become a Lua error at the calling
// line.
type Func func(args []any) ([]any, error)

// Limit errors, matched with errors.Is.
var (
	ErrTimeout    = errors.New("deadline exceeded")
	ErrAllocation = errors.New("allocation limit exceeded")
)

// Error is a failure inside a script: a syntax error, a runtime error or a
// limit that stopped it. Msg starts with the script's name and line.
type Error struct {
	Msg   string
	Limit error // ErrTimeout, ErrAllocation or nil
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Limit }

// VM is one Lua state. It is not safe for concurrent use.
//
// When its state holds more than the allocation budget after a call, the
// VM replaces it with a fresh one rebuilt from what made it — the
// registered functions, the globals set from Go and the scripts loaded, in
// order — and that call fails with ErrAllocation.
type VM struct {
	L       *glua.LState
	limits  Limits
	now     func() time.Time
	born    time.Time
	print   func(string)
	modules map[string]string
	loaded  map[string]glua.LValue
	held    []weak.Pointer[glua.LTable] // see hold
	// heldLive is how many of held were alive when it was last cleared.
	heldLive int
	dog      *watchdog // started by the first call
	heap     heapMark
	// recipe rebuilds the state; rebuilding is set while it runs.
	recipe     []func() error
	rebuilding bool
}

// New returns a VM with only the sandboxed libraries open.
func New(opt Options) *VM {
	lim := opt.Limits
	for _, d := range []struct {
		v   *int
		def int
	}{{&lim.CallDepth, DefaultCallDepth}, {&lim.StackSlots, DefaultStackSlots}, {&lim.StringBytes, DefaultStringBytes},
		{&lim.SourceBytes, DefaultSourceBytes}, {&lim.ConvertNodes, DefaultConvertNodes}, {&lim.ConvertBytes, DefaultConvertBytes}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if lim.AllocBytes == 0 {
		lim.AllocBytes = DefaultAllocBytes
	}
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	vm := &VM{limits: lim, now: now, born: now(), print: opt.Print, modules: opt.Modules}
	vm.fresh()
	return vm
}

// fresh gives the VM a new state with the sandboxed libraries open.
func (vm *VM) fresh() {
	vm.L = glua.NewState(glua.Options{
		SkipOpenLibs:    true,
		CallStackSize:   vm.limits.CallDepth,
		RegistrySize:    1024,
		RegistryMaxSize: vm.limits.StackSlots,
		// A fixed call stack of CallDepth frames: growing and shrinking it
		// on calls cost more than the few kilobytes it saves.
		MinimizeStackMemory: false,
	})
	vm.loaded = map[string]glua.LValue{}
	vm.openSandbox(vm.print)
	vm.heap = heapMark{allocs: allocated()}
}

// rebuild replaces the state with a fresh one made by the recipe.
func (vm *VM) rebuild() error {
	vm.L.Close()
	vm.fresh()
	vm.rebuilding = true
	defer func() { vm.rebuilding = false }()
	for _, step := range vm.recipe {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// record runs step and, if it succeeds, keeps it for a rebuild: a script
// that fails to load (or leaves the state over budget, which rebuilds it
// without the script) is not part of the VM.
func (vm *VM) record(step func() error) error {
	if err := step(); err != nil {
		return err
	}
	vm.recipe = append(vm.recipe, step)
	return nil
}

// Close releases the state.
func (vm *VM) Close() {
	if vm.dog != nil {
		vm.dog.close()
	}
	vm.L.Close()
}

// Check compiles src without running it, within the default source
// limits, and reports a syntax error as name:line.
func Check(name, src string) error {
	_, err := compile(name, src, DefaultSourceBytes)
	return err
}

// Load compiles src and runs its top level under the VM's limits.
func (vm *VM) Load(ctx context.Context, name, src string) error {
	return vm.record(func() error {
		proto, err := vm.compile(name, src)
		if err != nil {
			return err
		}
		_, err = vm.run(ctx, vm.L.NewFunctionFromProto(proto), "main chunk", nil)
		return err
	})
}

// Call calls the global function name with args and returns its results.
func (vm *VM) Call(ctx context.Context, name string, args ...any) ([]any, error) {
	fn, ok := vm.global(name).(*glua.LFunction)
	if !ok {
		return nil, fmt.Errorf("lua: no function %q", name)
	}
	return vm.run(ctx, fn, name, args)
}

// HasFunc reports whether the global name is a function.
func (vm *VM) HasFunc(name string) bool {
	_, ok := vm.global(name).(*glua.LFunction)
	return ok
}

// GlobalValue returns the global name converted to Go, or an error naming
// it when it exceeds the conversion limits.
func (vm *VM) GlobalValue(name string) (any, error) {
	v, err := vm.fromLua(vm.global(name))
	if err != nil {
		return nil, fmt.Errorf("lua: global %s: %w", name, err)
	}
	return v, nil
}

// global reads the global name raw: an __index the script gave the
// globals table would run here, outside any call and its deadline.
func (vm *VM) global(name string) glua.LValue { return vm.L.G.Global.RawGetString(name) }

// Global is GlobalValue without the error: a value over the conversion
// limits is nil.
func (vm *VM) Global(name string) any {
	v, _ := vm.GlobalValue(name)
	return v
}

// SetGlobal sets the global name to v converted with ToLua.
func (vm *VM) SetGlobal(name string, v any) {
	_ = vm.record(func() error {
		vm.L.G.Global.RawSetString(name, ToLua(vm.L, v))
		return nil
	})
}

// Register makes fn callable from Lua as the global name.
func (vm *VM) Register(name string, fn Func) {
	_ = vm.record(func() error {
		vm.L.G.Global.RawSetString(name, vm.L.NewFunction(func(L *glua.LState) int {
			// One conversion for all the arguments: the limits bound them
			// together.
			c := vm.newConversion()
			args := make([]any, L.GetTop())
			for i := range args {
				args[i] = c.value(L.Get(i+1), 0)
			}
			if err := c.err(); err != nil {
				L.RaiseError("%s: %v", name, err)
				return 0
			}
			res, err := fn(args)
			if err != nil {
				L.RaiseError("%s: %v", name, err)
				return 0
			}
			for _, r := range res {
				L.Push(ToLua(L, r))
			}
			return len(res)
		}))
		return nil
	})
}

// run calls fn, then checks what the state holds (see VM).
func (vm *VM) run(ctx context.Context, fn *glua.LFunction, what string, args []any) ([]any, error) {
	out, err := vm.call(ctx, fn, what, args)
	if vm.rebuilding {
		return out, err
	}
	if live, over, late := vm.heapOver(); over || late {
		rerr := vm.rebuild()
		msg := fmt.Sprintf("%s: after %s the state holds over %d MiB, beyond the budget of %d MiB; it was rebuilt from its scripts",
			source(fn), what, live>>20, vm.limits.AllocBytes>>20)
		limit := ErrAllocation
		if late {
			msg = fmt.Sprintf("%s: after %s the state took over %v to check, the deadline of a call; it was rebuilt from its scripts",
				source(fn), what, vm.limits.Timeout)
			limit = ErrTimeout
		}
		if rerr != nil {
			msg += ", which failed: " + rerr.Error()
		}
		return nil, &Error{Msg: clip.Text(msg, maxMessageBytes), Limit: limit}
	}
	return out, err
}

func (vm *VM) call(ctx context.Context, fn *glua.LFunction, what string, args []any) ([]any, error) {
	ctx, stop := vm.guard(ctx)
	defer stop()
	L := vm.L
	L.SetContext(ctx)
	defer L.RemoveContext()
	top := L.GetTop()
	defer L.SetTop(top)
	L.Push(fn)
	for _, a := range args {
		L.Push(ToLua(L, a))
	}
	if err := L.PCall(len(args), glua.MultRet, nil); err != nil {
		return nil, classify(ctx, err, source(fn))
	}
	if limit := limitOf(ctx); limit != nil {
		// The script caught the limit's error with pcall and returned.
		return nil, &Error{Msg: fmt.Sprintf("%s: %s: %v (caught by the script)", source(fn), what, limit), Limit: limit}
	}
	c := vm.newConversion()
	out := make([]any, 0, L.GetTop()-top)
	for i := top + 1; i <= L.GetTop(); i++ {
		out = append(out, c.value(L.Get(i), 0))
	}
	if err := c.err(); err != nil {
		return nil, &Error{Msg: fmt.Sprintf("%s:%d: result of %s: %v", source(fn), fn.Proto.LineDefined, what, err)}
	}
	return out, nil
}

// source is the name of the script fn is in.
func source(fn *glua.LFunction) string {
	if fn.Proto == nil {
		return "?"
	}
	return fn.Proto.SourceName
}

// maxMessageBytes bounds an error message: a script can raise a megabyte.
const maxMessageBytes = 1024

// hasPosition reports whether msg starts with "name:line:".
func hasPosition(msg string) bool {
	_, rest, ok := strings.Cut(msg, ":")
	digits := 0
	for digits < len(rest) && rest[digits] >= '0' && rest[digits] <= '9' {
		digits++
	}
	return ok && digits > 0 && digits < len(rest) && rest[digits] == ':'
}

// classify turns a gopher-lua error into an Error, naming the limit that
// stopped the script when one did.
// A message without a position (an error object that is not a string, an
// error raised at level 0) is given the script's name.
func classify(ctx context.Context, err error, src string) error {
	msg := err.Error()
	var ae *glua.ApiError
	if errors.As(err, &ae) {
		switch o := ae.Object.(type) {
		case glua.LString:
			msg = string(o)
		default:
			msg = fmt.Sprintf("error object is a %s value", o.Type())
		}
	}
	if !hasPosition(msg) {
		msg = src + ": " + msg
	}
	e := &Error{Msg: msg, Limit: limitOf(ctx)}
	if e.Limit != nil {
		// gopher-lua appends ctx.Err() to the position; name the real cause.
		pos, _, _ := strings.Cut(msg, " context ")
		e.Msg = strings.TrimSpace(pos) + " " + e.Limit.Error()
	}
	e.Msg = clip.Text(e.Msg, maxMessageBytes)
	return e
}

// limitOf is the limit that ended the call's context, or nil.
func limitOf(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, ErrAllocation):
		return ErrAllocation
	case errors.Is(cause, context.DeadlineExceeded):
		return ErrTimeout
	}
	return cause
}
