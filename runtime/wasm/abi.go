package wasm

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// The http_handler ABI: the host module guests import and the two functions
// they export. See https://http-wasm.io/http-handler-abi/.
const (
	abiModule            = "http_handler"
	exportHandleRequest  = "handle_request"
	exportHandleResponse = "handle_response"
)

const i32, i64 = api.ValueTypeI32, api.ValueTypeI64

// Features a guest may enable, as bit flags.
type Features uint32

const (
	// FeatureBufferRequest keeps the request body readable downstream after
	// the guest has read it.
	FeatureBufferRequest Features = 1 << iota
	// FeatureBufferResponse holds the downstream response so the guest can
	// read and rewrite its status, headers and body.
	FeatureBufferResponse
	// FeatureTrailers gives access to request and response trailers.
	FeatureTrailers

	supportedFeatures = FeatureBufferRequest | FeatureBufferResponse | FeatureTrailers
)

// Header kinds and body kinds, as the guest passes them.
const (
	kindRequest          = 0
	kindResponse         = 1
	kindRequestTrailers  = 2
	kindResponseTrailers = 3
)

// abi implements the host functions. t is nil only when validating, where no
// function is ever called.
type abi struct{ t *Transform }

func newABI(t *Transform) abi { return abi{t: t} }

func (a abi) build(b wazero.HostModuleBuilder) wazero.HostModuleBuilder {
	fn := func(name string, f api.GoModuleFunc, params, results []api.ValueType) {
		b.NewFunctionBuilder().WithGoModuleFunction(withDeadline(f), params, results).Export(name)
	}
	fn("enable_features", a.enableFeatures, []api.ValueType{i32}, []api.ValueType{i32})
	fn("get_config", a.getConfig, []api.ValueType{i32, i32}, []api.ValueType{i32})
	fn("log_enabled", a.logEnabled, []api.ValueType{i32}, []api.ValueType{i32})
	fn("log", a.log, []api.ValueType{i32, i32, i32}, nil)
	fn("get_method", a.getMethod, []api.ValueType{i32, i32}, []api.ValueType{i32})
	fn("set_method", a.setMethod, []api.ValueType{i32, i32}, nil)
	fn("get_uri", a.getURI, []api.ValueType{i32, i32}, []api.ValueType{i32})
	fn("set_uri", a.setURI, []api.ValueType{i32, i32}, nil)
	fn("get_protocol_version", a.getProtocolVersion, []api.ValueType{i32, i32}, []api.ValueType{i32})
	fn("get_header_names", a.getHeaderNames, []api.ValueType{i32, i32, i32}, []api.ValueType{i64})
	fn("get_header_values", a.getHeaderValues, []api.ValueType{i32, i32, i32, i32, i32}, []api.ValueType{i64})
	fn("set_header_value", a.setHeaderValue, []api.ValueType{i32, i32, i32, i32, i32}, nil)
	fn("add_header_value", a.addHeaderValue, []api.ValueType{i32, i32, i32, i32, i32}, nil)
	fn("remove_header", a.removeHeader, []api.ValueType{i32, i32, i32}, nil)
	fn("read_body", a.readBody, []api.ValueType{i32, i32, i32}, []api.ValueType{i64})
	fn("write_body", a.writeBody, []api.ValueType{i32, i32, i32}, nil)
	fn("get_status_code", a.getStatusCode, nil, []api.ValueType{i32})
	fn("set_status_code", a.setStatusCode, []api.ValueType{i32}, nil)
	fn("get_source_addr", a.getSourceAddr, []api.ValueType{i32, i32}, []api.ValueType{i32})
	return b
}

// withDeadline stops a guest at its first host call past its deadline. The
// meter charges every host call the same fuel, whatever work the call does
// over guest memory, so a loop of costly calls (set_uri of a 16 MiB URI)
// would otherwise run for a whole slice before refuel saw the deadline:
// minutes, not one call.
func withDeadline(f api.GoModuleFunc) api.GoModuleFunc {
	return func(ctx context.Context, mod api.Module, stack []uint64) {
		if ctx.Err() != nil {
			panic(errDeadline)
		}
		f(ctx, mod, stack)
	}
}

// abiError is what a host function panics with when the guest breaks the
// ABI; wazero turns the panic into an error from the guest call, and the
// instance is discarded like after any trap.
type abiError struct{ msg string }

func (e abiError) Error() string { return "http_handler: " + e.msg }

func fail(format string, args ...any) { panic(abiError{fmt.Sprintf(format, args...)}) }

// read returns a view of guest memory; copy it before keeping it.
func read(mod api.Module, ptr, n uint32) []byte {
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		fail("read of %d bytes at %d is out of guest memory", n, ptr)
	}
	return b
}

// writeIfFits copies data to guest memory when it fits in limit, and returns
// its length either way, so the guest can retry with a bigger buffer.
func writeIfFits(mod api.Module, buf, limit uint32, data []byte) uint32 {
	n := uint32(len(data))
	if n > 0 && n <= limit && !mod.Memory().Write(buf, data) {
		fail("write of %d bytes at %d is out of guest memory", n, buf)
	}
	return n
}

func writeStringIfFits(mod api.Module, buf, limit uint32, s string) uint32 {
	if uint32(len(s)) > limit {
		return uint32(len(s))
	}
	if s != "" && !mod.Memory().WriteString(buf, s) {
		fail("write of %d bytes at %d is out of guest memory", len(s), buf)
	}
	return uint32(len(s))
}

// writeNULList writes strs, each followed by NUL, when the whole fits in
// limit, and returns count<<32 | length.
func writeNULList(mod api.Module, buf, limit uint32, strs []string) uint64 {
	size := 0
	for _, s := range strs {
		size += len(s) + 1
	}
	if len(strs) > 0 && uint64(size) <= uint64(limit) {
		out := make([]byte, 0, size)
		for _, s := range strs {
			out = append(out, s...)
			out = append(out, 0)
		}
		if !mod.Memory().Write(buf, out) {
			fail("write of %d bytes at %d is out of guest memory", size, buf)
		}
	}
	return uint64(len(strs))<<32 | uint64(uint32(size))
}

// current is the request the guest is handling; calling a request function
// outside handle_request or handle_response breaks the ABI.
func current(ctx context.Context) *exchange {
	x, _ := ctx.Value(exchangeKey{}).(*exchange)
	if x == nil {
		fail("request function called outside handle_request or handle_response")
	}
	return x
}

func (a abi) enableFeatures(ctx context.Context, _ api.Module, stack []uint64) {
	want := Features(stack[0]) & supportedFeatures
	if x, ok := ctx.Value(exchangeKey{}).(*exchange); ok {
		x.features |= want
		stack[0] = uint64(x.features)
		return
	}
	// Outside a request (during the guest's start function): the features
	// become this instance's defaults for every request.
	if inst, ok := ctx.Value(instanceKey{}).(*instance); ok {
		inst.features |= want
		stack[0] = uint64(inst.features)
		return
	}
	stack[0] = uint64(want)
}

func (a abi) getConfig(_ context.Context, mod api.Module, stack []uint64) {
	var cfg []byte
	if a.t != nil {
		cfg = a.t.spec.Config
	}
	stack[0] = uint64(writeIfFits(mod, uint32(stack[0]), uint32(stack[1]), cfg))
}

// slogLevel maps the ABI's levels (debug -1, info 0, warn 1, error 2,
// none 3) onto slog's.
func slogLevel(level int32) (slog.Level, bool) {
	switch {
	case level < 0:
		return slog.LevelDebug, true
	case level == 0:
		return slog.LevelInfo, true
	case level == 1:
		return slog.LevelWarn, true
	case level == 2:
		return slog.LevelError, true
	}
	return 0, false
}

func (a abi) logEnabled(ctx context.Context, _ api.Module, stack []uint64) {
	lvl, ok := slogLevel(int32(stack[0]))
	stack[0] = 0
	if ok && a.t != nil && a.t.logger.Enabled(ctx, lvl) {
		stack[0] = 1
	}
}

func (a abi) log(ctx context.Context, mod api.Module, stack []uint64) {
	lvl, ok := slogLevel(int32(stack[0]))
	if !ok || a.t == nil {
		return
	}
	a.t.guestLog.log(ctx, lvl, "wasm guest log", read(mod, uint32(stack[1]), uint32(stack[2])))
}

func (a abi) getMethod(ctx context.Context, mod api.Module, stack []uint64) {
	stack[0] = uint64(writeStringIfFits(mod, uint32(stack[0]), uint32(stack[1]), current(ctx).r.Method))
}

func (a abi) setMethod(ctx context.Context, mod api.Module, stack []uint64) {
	x := current(ctx)
	x.mustBeforeNext("set_method")
	m := string(read(mod, uint32(stack[0]), uint32(stack[1])))
	if !validMethod(m) {
		fail("set_method with invalid method %.64q (a method is a token)", m)
	}
	x.holdHead(len(m))
	x.r.Method = m
}

func (a abi) getURI(ctx context.Context, mod api.Module, stack []uint64) {
	stack[0] = uint64(writeStringIfFits(mod, uint32(stack[0]), uint32(stack[1]), requestURI(current(ctx).r)))
}

func (a abi) setURI(ctx context.Context, mod api.Module, stack []uint64) {
	x := current(ctx)
	x.mustBeforeNext("set_uri")
	uri := string(read(mod, uint32(stack[0]), uint32(stack[1])))
	x.holdHead(len(uri))
	if err := setRequestURI(x.r, uri); err != nil {
		fail("set_uri: %v", err)
	}
}

func (a abi) getProtocolVersion(ctx context.Context, mod api.Module, stack []uint64) {
	stack[0] = uint64(writeStringIfFits(mod, uint32(stack[0]), uint32(stack[1]), current(ctx).r.Proto))
}

func (a abi) getSourceAddr(ctx context.Context, mod api.Module, stack []uint64) {
	stack[0] = uint64(writeStringIfFits(mod, uint32(stack[0]), uint32(stack[1]), current(ctx).r.RemoteAddr))
}

func (a abi) getHeaderNames(ctx context.Context, mod api.Module, stack []uint64) {
	names := current(ctx).headerNames(uint32(stack[0]))
	stack[0] = writeNULList(mod, uint32(stack[1]), uint32(stack[2]), names)
}

func (a abi) getHeaderValues(ctx context.Context, mod api.Module, stack []uint64) {
	name := string(read(mod, uint32(stack[1]), uint32(stack[2])))
	values := current(ctx).headerValues(uint32(stack[0]), name)
	stack[0] = writeNULList(mod, uint32(stack[3]), uint32(stack[4]), values)
}

func (a abi) setHeaderValue(ctx context.Context, mod api.Module, stack []uint64) {
	name, value := headerArgs(mod, stack)
	current(ctx).setHeader(uint32(stack[0]), name, value, false)
}

func (a abi) addHeaderValue(ctx context.Context, mod api.Module, stack []uint64) {
	name, value := headerArgs(mod, stack)
	current(ctx).setHeader(uint32(stack[0]), name, value, true)
}

func headerArgs(mod api.Module, stack []uint64) (name, value string) {
	name = string(read(mod, uint32(stack[1]), uint32(stack[2])))
	value = string(read(mod, uint32(stack[3]), uint32(stack[4])))
	if !validField(uint32(stack[0]), name, value) {
		fail("invalid header field %.64q (a name is a token, a value has no CR, LF or NUL, a Host is a host, a trailer one a trailer may be)", name)
	}
	return name, value
}

func (a abi) removeHeader(ctx context.Context, mod api.Module, stack []uint64) {
	name := string(read(mod, uint32(stack[1]), uint32(stack[2])))
	current(ctx).removeHeader(uint32(stack[0]), name)
}

func (a abi) readBody(ctx context.Context, mod api.Module, stack []uint64) {
	buf, limit := uint32(stack[1]), uint32(stack[2])
	if limit == 0 {
		fail("read_body with a zero buffer")
	}
	dst := read(mod, buf, limit) // the guest's buffer, written in place
	n, eof := current(ctx).readBody(uint32(stack[0]), dst)
	stack[0] = uint64(n)
	if eof {
		stack[0] |= 1 << 32
	}
}

func (a abi) writeBody(ctx context.Context, mod api.Module, stack []uint64) {
	current(ctx).writeBody(uint32(stack[0]), read(mod, uint32(stack[1]), uint32(stack[2])))
}

func (a abi) getStatusCode(ctx context.Context, _ api.Module, stack []uint64) {
	stack[0] = uint64(current(ctx).statusCode())
}

func (a abi) setStatusCode(ctx context.Context, _ api.Module, stack []uint64) {
	// The guest sets the final status, which a 1xx is not: a bare 101
	// would leave a proxy in front tunnelling the connection.
	code := uint32(stack[0])
	if code < 200 || code > 999 {
		fail("set_status_code with invalid code %d (a final status is 200..999)", code)
	}
	current(ctx).setStatusCode(int(code))
}
