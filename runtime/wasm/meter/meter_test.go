package meter

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// wat compiles WebAssembly text with wabt's wat2wasm (Debian package wabt,
// which .ci/run installs), with extra flags.
func wat(t testing.TB, src string, flags ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		t.Skip("wat2wasm not installed (Debian package wabt)")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "m.wat")
	if strings.HasSuffix(src, ".wat") {
		in = filepath.Join("testdata", src)
	} else if err := os.WriteFile(in, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "m.wasm")
	args := append(append([]string{}, flags...), in, "-o", out)
	if b, err := exec.Command("wat2wasm", args...).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// runner instantiates modules with the imports testdata/features.wat and
// the meter need, counting refuels.
type runner struct {
	rt      wazero.Runtime
	slice   uint64
	refuels int
}

func newRunner(t *testing.T, slice uint64) *runner {
	ctx := context.Background()
	r := &runner{rt: wazero.NewRuntime(ctx), slice: slice}
	t.Cleanup(func() { r.rt.Close(ctx) })
	_, err := r.rt.NewHostModuleBuilder("env").
		NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, s []uint64) { s[0] *= 2 }),
		[]api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).Export("twice").
		Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.rt.NewHostModuleBuilder(ImportModule).
		NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, s []uint64) {
		r.refuels++
		s[0] = r.slice
	}), nil, []api.ValueType{api.ValueTypeI64}).Export(ImportRefuel).
		Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *runner) instantiate(t *testing.T, name string, wasm []byte) api.Module {
	t.Helper()
	ctx := context.Background()
	compiled, err := r.rt.CompileModule(ctx, wasm)
	if err != nil {
		t.Fatalf("compile %s: %v", name, err)
	}
	mod, err := r.rt.InstantiateModule(ctx, compiled, wazero.NewModuleConfig().WithName(name))
	if err != nil {
		t.Fatalf("instantiate %s: %v", name, err)
	}
	return mod
}

// The metered module computes what the original does, over every kind of
// instruction and section the meter touches.
func TestMeteredModuleComputesTheSame(t *testing.T) {
	orig := wat(t, "features.wat", "--debug-names")
	metered, err := Instrument(orig)
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, 1<<20)
	// The global features.wat imports, which a host module cannot export.
	ctx := context.Background()
	genv := wat(t, `(module (global (export "g") i32 (i32.const 21)))`)
	if _, err := r.rt.InstantiateWithConfig(ctx, genv, wazero.NewModuleConfig().WithName("envg")); err != nil {
		t.Fatal(err)
	}
	a := r.instantiate(t, "orig", orig)
	b := r.instantiate(t, "metered", metered)
	for _, c := range []struct {
		fn   string
		args []uint64
	}{
		{"sum", []uint64{10}}, {"sum", []uint64{1000}}, {"sum", []uint64{1 << 20}},
		{"multi", []uint64{0}}, {"multi", []uint64{3}},
		{"dispatch", []uint64{0}}, {"dispatch", []uint64{1}}, {"dispatch", []uint64{2}},
		{"bulk", nil}, {"numeric", nil}, {"simd", nil},
	} {
		want, err := a.ExportedFunction(c.fn).Call(ctx, c.args...)
		if err != nil {
			t.Fatalf("original %s%v: %v", c.fn, c.args, err)
		}
		got, err := b.ExportedFunction(c.fn).Call(ctx, c.args...)
		if err != nil {
			t.Fatalf("metered %s%v: %v", c.fn, c.args, err)
		}
		if len(got) != len(want) || got[0] != want[0] {
			t.Errorf("%s%v = %v metered, %v original", c.fn, c.args, got, want)
		}
	}
	if r.refuels == 0 {
		t.Error("the metered module never asked for fuel")
	}
	// Function names survive, shifted past the new import.
	if name := b.ExportedFunction("sum").Definition().DebugName(); !strings.Contains(name, "sum") {
		t.Errorf("debug name of sum is %q", name)
	}
}

// Fuel is charged in proportion to the work done, whether it is loops,
// calls without loops, or one bulk operation.
func TestFuelFollowsWork(t *testing.T) {
	m := wat(t, `(module
		(memory (export "memory") 256)
		(func $tree (param i32)
			(if (local.get 0) (then
				(call $tree (i32.sub (local.get 0) (i32.const 1)))
				(call $tree (i32.sub (local.get 0) (i32.const 1))))))
		(func (export "tree") (param i32) (call $tree (local.get 0)))
		(func (export "spin") (param i32)
			(loop $l (br_if $l (local.tee 0 (i32.sub (local.get 0) (i32.const 1))))))
		(func (export "fill") (param i32) (local $i i32)
			(loop $l
				(memory.fill (i32.const 0) (i32.const 1) (local.get 0))
				(br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 64))))))`)
	metered, err := Instrument(m)
	if err != nil {
		t.Fatal(err)
	}
	const slice = 10000
	refuels := func(fn string, arg uint64) int {
		r := newRunner(t, slice)
		mod := r.instantiate(t, "m", metered)
		if _, err := mod.ExportedFunction(fn).Call(context.Background(), arg); err != nil {
			t.Fatalf("%s(%d): %v", fn, arg, err)
		}
		return r.refuels
	}
	for _, c := range []struct {
		fn         string
		small, big uint64
		ratio      int
	}{
		{"tree", 12, 16, 16},           // 16 times the calls
		{"spin", 1 << 16, 1 << 20, 16}, // 16 times the iterations
	} {
		small, big := refuels(c.fn, c.small), refuels(c.fn, c.big)
		if small < 2 || big < c.ratio*small/2 {
			t.Errorf("%s: %d refuels for %d, %d for %d; want about %d times more", c.fn, small, c.small, big, c.big, c.ratio)
		}
	}
	// 64 fills of 16 bytes fit in one slice; each fill of 1 MiB is more
	// than a slice, and so is checked on its own.
	if small, big := refuels("fill", 16), refuels("fill", 1<<20); small > 1 || big < 64 {
		t.Errorf("fill: %d refuels for 64 fills of 16 bytes, %d for 64 of 1 MiB; want 1 and at least 64", small, big)
	}
}

// Recursion is stopped by the depth counter, long before wazero's own
// stack ceiling.
func TestDeepRecursionTraps(t *testing.T) {
	m := wat(t, `(module (func (export "down") (param i64) (result i64)
		(i64.add (call 0 (i64.add (local.get 0) (i64.const 1))) (i64.const 1))))`)
	metered, err := Instrument(m)
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, 1<<20)
	_, err = r.instantiate(t, "m", metered).ExportedFunction("down").Call(context.Background(), 0)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("recursion without end: %v, want the meter's unreachable", err)
	}
}

func TestRefusals(t *testing.T) {
	for name, c := range map[string]struct {
		wasm []byte
		want string
	}{
		"atomics": {wat(t, `(module (memory 1 1)
			(func (result i32) (i32.atomic.load (i32.const 0))))`, "--enable-threads"), "opcode 0xfe"},
		"tail calls": {wat(t, `(module (func $f (return_call $f)))`, "--enable-tail-call"), "opcode 0x12"},
		"own import": {wat(t, `(module (import "perigee_meter" "refuel" (func (result i64))))`), "host's own"},
		"not wasm":   {[]byte("\x7fELF\x02\x01\x01\x00"), "not a WebAssembly module"},
		"huge br_table": {wat(t, `(module (func (param i32) (block $a (br_table `+strings.Repeat("$a ", MaxBrTable+2)+`(local.get 0)))))`),
			"br_table of 16385 targets, the most allowed is 16384"},
		"truncated": {wat(t, `(module (func (result i32) (i32.const 1)))`)[:20], "unexpected end"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Instrument(c.wasm); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Instrument: %v, want an error saying %q", err, c.want)
			}
		})
	}
}

// No input makes Instrument or EmptyExport panic, or Instrument allocate
// beyond its input's size.
func FuzzInstrument(f *testing.F) {
	for _, src := range []string{"features.wat"} {
		f.Add(wat(f, src))
	}
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x0a\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, b []byte) {
		EmptyExport(b, "handle_response")
		out, err := Instrument(b)
		if err == nil && len(out) > 64*len(b)+1024 {
			t.Errorf("%d bytes out of %d in", len(out), len(b))
		}
	})
}

func TestEmptyExport(t *testing.T) {
	for src, want := range map[string]bool{
		`(module (func (export "f") (param i32 i32)))`:                         true,
		`(module (func (export "f") (local i64 f32)))`:                         true,
		`(module (func) (func (export "f")) (func (export "g") (nop)))`:        true,
		`(module (func (export "f") (nop)))`:                                   false,
		`(module (func (export "f") (param i32) (drop (local.get 0))))`:        false,
		`(module (func (export "g")))`:                                         false,
		`(module (import "env" "f" (func)) (export "f" (func 0)))`:             false,
		`(module (global (export "f") i32 (i32.const 0)) (func (export "g")))`: false,
		`(module (func $e) (func (export "f") (call $e)))`:                     false,
	} {
		if got := EmptyExport(wat(t, src), "f"); got != want {
			t.Errorf("EmptyExport(%s) = %v, want %v", src, got, want)
		}
	}
	if EmptyExport([]byte("\x00asm\x01\x00\x00\x00\x0a\xff"), "f") {
		t.Error("a truncated module has an empty export")
	}
}

// A module may declare as many functions, globals, element segment
// elements and data segments as the bounds allow, and not one more.
func TestDeclarationBounds(t *testing.T) {
	section := func(id byte, count uint32, entry []byte) []byte {
		body := appendU32(nil, count)
		for range count {
			body = append(body, entry...)
		}
		return append(appendU32([]byte{id}, uint32(len(body))), body...)
	}
	module := func(sections ...[]byte) []byte {
		out := []byte("\x00asm\x01\x00\x00\x00")
		for _, s := range sections {
			out = append(out, s...)
		}
		return out
	}
	funcType := section(secType, 1, []byte{0x60, 0, 0})
	oneFunc := [][]byte{funcType, section(secFunction, 1, []byte{0}), section(secCode, 1, []byte{2, 0, opEnd})}
	// One passive segment of n functions 0, as many elements with itself.
	passive := func(n uint32) []byte {
		return section(secElement, 1, append(appendU32([]byte{1, 0}, n), make([]byte, n)...))
	}
	for name, c := range map[string]func(n uint32) []byte{
		"functions": func(n uint32) []byte {
			return module(funcType, section(secFunction, n, []byte{0}), section(secCode, n, []byte{2, 0, opEnd}))
		},
		"globals":       func(n uint32) []byte { return module(section(secGlobal, n, []byte{i32, 0, opI32Const, 0, opEnd})) },
		"elements":      func(n uint32) []byte { return module(append(oneFunc[:2:2], passive(n-1), oneFunc[2])...) },
		"data segments": func(n uint32) []byte { return module(section(secData, n, []byte{1, 0})) },
	} {
		bound := map[string]uint32{"functions": MaxFunctions, "globals": MaxGlobals, "elements": MaxElements, "data segments": MaxDataSegments}[name]
		if _, err := Instrument(c(bound)); err != nil {
			t.Errorf("%d %s: %v, want them allowed", bound, name, err)
		}
		if _, err := Instrument(c(bound + 1)); err == nil || !strings.Contains(err.Error(), "the most allowed is") {
			t.Errorf("%d %s: %v, want them refused", bound+1, name, err)
		}
	}
	// Locals in all: functions of as many as one may have, the rest in one
	// more.
	locals := func(total uint32) []byte {
		per := uint32(MaxStack - frameBase)
		n := (total + per - 1) / per
		bodies := appendU32(nil, n)
		for left := total; left > 0; left -= min(left, per) {
			body := append(appendU32([]byte{1}, min(left, per)), i64, opEnd)
			bodies = append(appendU32(bodies, uint32(len(body))), body...)
		}
		return module(funcType, section(secFunction, n, []byte{0}), append(appendU32([]byte{secCode}, uint32(len(bodies))), bodies...))
	}
	if _, err := Instrument(locals(MaxLocals)); err != nil {
		t.Errorf("%d locals: %v, want them allowed", MaxLocals, err)
	}
	if _, err := Instrument(locals(MaxLocals + 1)); err == nil || !strings.Contains(err.Error(), "locals in all") {
		t.Errorf("%d locals: %v, want them refused", MaxLocals+1, err)
	}
	// A body of size bytes: no locals, nops, end.
	body := func(size int) []byte {
		b := append(append([]byte{0}, bytes.Repeat([]byte{0x01}, size-2)...), opEnd)
		return module(funcType, section(secFunction, 1, []byte{0}), section(secCode, 1, append(appendU32(nil, uint32(size)), b...)))
	}
	if _, err := Instrument(body(MaxBody)); err != nil {
		t.Errorf("a body of %d bytes: %v, want it allowed", MaxBody, err)
	}
	if _, err := Instrument(body(MaxBody + 1)); err == nil || !strings.Contains(err.Error(), "the most allowed is") {
		t.Errorf("a body of %d bytes: %v, want it refused", MaxBody+1, err)
	}
}
