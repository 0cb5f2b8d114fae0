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

	glua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

// Limits bound what one call into the VM may consume.
type Limits struct {
	// Timeout is the deadline of one Load or Call; zero means only the
	// caller's context bounds it.
	Timeout time.Duration
	// AllocBytes is the allocation budget of one Load or Call. It is
	// measured over the whole process while the call runs, so it errs on
	// the side of stopping a script; zero means DefaultAllocBytes.
	AllocBytes uint64
	// CallDepth bounds recursion; zero means DefaultCallDepth.
	CallDepth int
	// StackSlots bounds the value stack; zero means DefaultStackSlots.
	StackSlots int
	// StringBytes bounds a string built by string.rep in one step; zero
	// means DefaultStringBytes.
	StringBytes int
}

// Defaults for the zero values of Limits.
const (
	DefaultAllocBytes  = 64 << 20
	DefaultCallDepth   = 200
	DefaultStackSlots  = 256 << 10
	DefaultStringBytes = 1 << 20
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

// Func is a Go function callable from Lua. Its arguments and results are
// converted with FromLua and ToLua; a returned error becomes a Lua error at
// the calling line.
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
type VM struct {
	L       *glua.LState
	limits  Limits
	now     func() time.Time
	born    time.Time
	modules map[string]string
	loaded  map[string]glua.LValue
	dog     *watchdog // started by the first call
}

// New returns a VM with only the sandboxed libraries open.
func New(opt Options) *VM {
	lim := opt.Limits
	if lim.AllocBytes == 0 {
		lim.AllocBytes = DefaultAllocBytes
	}
	if lim.CallDepth == 0 {
		lim.CallDepth = DefaultCallDepth
	}
	if lim.StackSlots == 0 {
		lim.StackSlots = DefaultStackSlots
	}
	if lim.StringBytes == 0 {
		lim.StringBytes = DefaultStringBytes
	}
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	L := glua.NewState(glua.Options{
		SkipOpenLibs:    true,
		CallStackSize:   lim.CallDepth,
		RegistrySize:    1024,
		RegistryMaxSize: lim.StackSlots,
		// A fixed call stack of CallDepth frames: growing and shrinking it
		// on calls cost more than the few kilobytes it saves.
		MinimizeStackMemory: false,
	})
	vm := &VM{L: L, limits: lim, now: now, born: now(), modules: opt.Modules, loaded: map[string]glua.LValue{}}
	vm.openSandbox(opt.Print)
	return vm
}

// Close releases the state.
func (vm *VM) Close() {
	if vm.dog != nil {
		vm.dog.close()
	}
	vm.L.Close()
}

// Check compiles src without running it and reports a syntax error as
// name:line.
func Check(name, src string) error {
	_, err := compile(name, src)
	return err
}

func compile(name, src string) (*glua.FunctionProto, error) {
	chunk, err := parse.Parse(strings.NewReader(src), name)
	if err != nil {
		var pe *parse.Error
		if errors.As(err, &pe) {
			if pe.Pos.Line == parse.EOF {
				return nil, &Error{Msg: fmt.Sprintf("%s: at end of file: %s", name, pe.Message)}
			}
			return nil, &Error{Msg: fmt.Sprintf("%s:%d: %s near '%s'", name, pe.Pos.Line, pe.Message, pe.Token)}
		}
		return nil, &Error{Msg: fmt.Sprintf("%s: %v", name, err)}
	}
	proto, err := glua.Compile(chunk, name)
	if err != nil {
		return nil, &Error{Msg: fmt.Sprintf("%s: %v", name, err)}
	}
	return proto, nil
}

// Load compiles src and runs its top level under the VM's limits.
func (vm *VM) Load(ctx context.Context, name, src string) error {
	proto, err := compile(name, src)
	if err != nil {
		return err
	}
	_, err = vm.run(ctx, vm.L.NewFunctionFromProto(proto), nil)
	return err
}

// Call calls the global function name with args and returns its results.
func (vm *VM) Call(ctx context.Context, name string, args ...any) ([]any, error) {
	fn, ok := vm.L.GetGlobal(name).(*glua.LFunction)
	if !ok {
		return nil, fmt.Errorf("lua: no function %q", name)
	}
	return vm.run(ctx, fn, args)
}

// HasFunc reports whether the global name is a function.
func (vm *VM) HasFunc(name string) bool {
	_, ok := vm.L.GetGlobal(name).(*glua.LFunction)
	return ok
}

// Global returns the global name converted with FromLua.
func (vm *VM) Global(name string) any { return FromLua(vm.L.GetGlobal(name)) }

// SetGlobal sets the global name to v converted with ToLua.
func (vm *VM) SetGlobal(name string, v any) { vm.L.SetGlobal(name, ToLua(vm.L, v)) }

// Register makes fn callable from Lua as the global name.
func (vm *VM) Register(name string, fn Func) {
	vm.L.SetGlobal(name, vm.L.NewFunction(func(L *glua.LState) int {
		n := L.GetTop()
		args := make([]any, n)
		for i := range n {
			args[i] = FromLua(L.Get(i + 1))
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
}

func (vm *VM) run(ctx context.Context, fn *glua.LFunction, args []any) ([]any, error) {
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
		return nil, classify(ctx, err)
	}
	out := make([]any, 0, L.GetTop()-top)
	for i := top + 1; i <= L.GetTop(); i++ {
		out = append(out, FromLua(L.Get(i)))
	}
	return out, nil
}

// classify turns a gopher-lua error into an Error, naming the limit that
// stopped the script when one did.
func classify(ctx context.Context, err error) error {
	msg := err.Error()
	var ae *glua.ApiError
	if errors.As(err, &ae) {
		if s, ok := ae.Object.(glua.LString); ok {
			msg = string(s)
		}
	}
	e := &Error{Msg: msg}
	if ctx.Err() != nil {
		cause := context.Cause(ctx)
		switch {
		case errors.Is(cause, ErrAllocation):
			e.Limit = ErrAllocation
		case errors.Is(cause, context.DeadlineExceeded):
			e.Limit = ErrTimeout
		default:
			e.Limit = cause
		}
		// gopher-lua appends ctx.Err() to the position; name the real cause.
		pos, _, _ := strings.Cut(msg, " context ")
		e.Msg = strings.TrimSpace(pos) + " " + e.Limit.Error()
	}
	return e
}
