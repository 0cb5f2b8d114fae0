package wasm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"golang.org/x/net/http/httpguts"
)

// The proxy-wasm ABI (0.2.1, and 0.2.0 which differs only in its version
// export): the host functions guests import from "env" and the callbacks
// they export. See https://github.com/proxy-wasm/spec, abi-versions/v0.2.1.
const (
	ABIHTTPWasm  = "http-wasm"
	ABIProxyWasm = "proxy-wasm"

	proxyModule = "env"
)

// The proxy-wasm version exports a guest declares itself with.
var proxyVersions = []string{"proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"}

// proxy_status_t.
const (
	statusOK                 = 0
	statusNotFound           = 1
	statusBadArgument        = 2
	statusSerializationError = 3
	statusInvalidMemory      = 6
	statusEmpty              = 7
	statusCASMismatch        = 8
	statusInternalFailure    = 10
)

// proxy_action_t.
const (
	actionContinue = 0
	actionPause    = 1
)

// proxy_buffer_type_t the host knows.
const (
	bufferRequestBody   = 0
	bufferResponseBody  = 1
	bufferVMConfig      = 6
	bufferPluginConfig  = 7
	maxProxyBufferType  = 8
	mapRequestHeaders   = 0
	mapRequestTrailers  = 1
	mapResponseHeaders  = 2
	mapResponseTrailers = 3
)

// detectABI names the ABI of a compiled module: the one the spec asks for,
// or, when unset, proxy-wasm for a module that exports a proxy-wasm
// version, http-wasm otherwise.
func detectABI(want string, compiled wazero.CompiledModule) (string, error) {
	switch want {
	case ABIHTTPWasm, ABIProxyWasm:
		return want, nil
	case "":
		exports := compiled.ExportedFunctions()
		for _, v := range proxyVersions {
			if _, ok := exports[v]; ok {
				return ABIProxyWasm, nil
			}
		}
		return ABIHTTPWasm, nil
	}
	return "", fmt.Errorf("unknown abi %q (want %s or %s)", want, ABIHTTPWasm, ABIProxyWasm)
}

// checkProxyGuest checks a proxy-wasm module's exports: a version, an
// allocator, the context callbacks; and that every callback it exports
// that the host calls has the ABI's signature.
func checkProxyGuest(compiled wazero.CompiledModule) error {
	exports := compiled.ExportedFunctions()
	version := ""
	for _, v := range proxyVersions {
		if _, ok := exports[v]; ok {
			version = v
		}
	}
	if version == "" {
		return fmt.Errorf("module exports none of %s: not a proxy-wasm 0.2 module", strings.Join(proxyVersions, ", "))
	}
	if exports["proxy_on_memory_allocate"] == nil && exports["malloc"] == nil {
		return errors.New("module exports neither proxy_on_memory_allocate nor malloc")
	}
	if exports["proxy_on_context_create"] == nil {
		return errors.New("module does not export proxy_on_context_create")
	}
	for name, sig := range proxyCallbacks {
		if def := exports[name]; def != nil {
			if err := checkSignature(def, name, sig.params, sig.results); err != nil {
				return err
			}
		}
	}
	if _, ok := compiled.ExportedMemories()["memory"]; !ok {
		return errors.New(`module does not export its memory as "memory"`)
	}
	return nil
}

type sig struct{ params, results []api.ValueType }

var (
	i32x1 = []api.ValueType{i32}
	i32x2 = []api.ValueType{i32, i32}
	i32x3 = []api.ValueType{i32, i32, i32}
)

// proxyCallbacks are the exports the host calls, with their signatures.
var proxyCallbacks = map[string]sig{
	"proxy_on_memory_allocate":    {i32x1, i32x1},
	"malloc":                      {i32x1, i32x1},
	"proxy_on_context_create":     {i32x2, nil},
	"proxy_on_vm_start":           {i32x2, i32x1},
	"proxy_on_configure":          {i32x2, i32x1},
	"proxy_on_request_headers":    {i32x3, i32x1},
	"proxy_on_request_body":       {i32x3, i32x1},
	"proxy_on_request_trailers":   {i32x2, i32x1},
	"proxy_on_response_headers":   {i32x3, i32x1},
	"proxy_on_response_body":      {i32x3, i32x1},
	"proxy_on_response_trailers":  {i32x2, i32x1},
	"proxy_on_done":               {i32x1, i32x1},
	"proxy_on_log":                {i32x1, nil},
	"proxy_on_delete":             {i32x1, nil},
	"proxy_on_http_call_response": {[]api.ValueType{i32, i32, i32, i32, i32}, nil},
	"proxy_on_tick":               {i32x1, nil},
	"proxy_on_queue_ready":        {i32x2, nil},
}

// proxyGuest is one proxy-wasm instance's callbacks and contexts.
type proxyGuest struct {
	alloc                         api.Function
	contextCreate                 api.Function
	requestHeaders, requestBody   api.Function
	requestTrailers               api.Function
	responseHeaders, responseBody api.Function
	responseTrailers              api.Function
	done, log, delete             api.Function
	callResponse                  api.Function
	tick, queueReady              api.Function
	// rootID is the instance's root (plugin) context; each request gets the
	// next id, as Envoy numbers contexts per VM.
	rootID, nextID uint32
	allocating     bool // inside proxy_on_memory_allocate
}

func newProxyGuest(mod api.Module) *proxyGuest {
	fn := mod.ExportedFunction
	g := &proxyGuest{
		alloc:            fn("proxy_on_memory_allocate"),
		contextCreate:    fn("proxy_on_context_create"),
		requestHeaders:   fn("proxy_on_request_headers"),
		requestBody:      fn("proxy_on_request_body"),
		requestTrailers:  fn("proxy_on_request_trailers"),
		responseHeaders:  fn("proxy_on_response_headers"),
		responseBody:     fn("proxy_on_response_body"),
		responseTrailers: fn("proxy_on_response_trailers"),
		done:             fn("proxy_on_done"),
		log:              fn("proxy_on_log"),
		delete:           fn("proxy_on_delete"),
		callResponse:     fn("proxy_on_http_call_response"),
		tick:             fn("proxy_on_tick"),
		queueReady:       fn("proxy_on_queue_ready"),
		rootID:           1,
		nextID:           1,
	}
	if g.alloc == nil {
		g.alloc = fn("malloc")
	}
	return g
}

// startProxyGuest runs the root context's lifecycle, as Envoy does when it
// loads a plugin: proxy_on_context_create for the root,
// proxy_on_vm_start, proxy_on_configure with the plugin configuration: all
// within ctx's deadline, and stopped when ctx ends.
func (t *Transform) startProxyGuest(ctx context.Context, inst *instance) error {
	stop := context.AfterFunc(ctx, inst.ctx.abandon)
	err := t.startRoot(ctx, inst)
	if !stop() && err == nil { // abandoned just as it finished
		err = fmt.Errorf("root context start: %w", ctx.Err())
	}
	return err
}

func (t *Transform) startRoot(ctx context.Context, inst *instance) error {
	deadline, _ := ctx.Deadline()
	g := inst.proxy
	var stack [2]uint64
	call := func(name string, args ...uint64) (uint64, error) {
		fn := inst.mod.ExportedFunction(name)
		if fn == nil {
			return 1, nil
		}
		copy(stack[:], args)
		err := inst.ctx.call(nil, fn, stack[:], time.Until(deadline))
		return stack[0], err
	}
	if _, err := call("proxy_on_context_create", uint64(g.rootID), 0); err != nil {
		return fmt.Errorf("proxy_on_context_create (root): %w", err)
	}
	if ok, err := call("proxy_on_vm_start", uint64(g.rootID), 0); err != nil {
		return fmt.Errorf("proxy_on_vm_start: %w", err)
	} else if ok == 0 {
		return errors.New("proxy_on_vm_start returned false")
	}
	if ok, err := call("proxy_on_configure", uint64(g.rootID), uint64(len(t.spec.Config))); err != nil {
		return fmt.Errorf("proxy_on_configure: %w", err)
	} else if ok == 0 {
		return errors.New("proxy_on_configure returned false: the filter refused its configuration")
	}
	return nil
}

// proxyABI implements the proxy-wasm host functions. t is nil only when
// validating, where no function is ever called.
type proxyABI struct{ t *Transform }

func (p proxyABI) build(b wazero.HostModuleBuilder) wazero.HostModuleBuilder {
	fn := func(name string, f api.GoModuleFunc, params ...api.ValueType) {
		b.NewFunctionBuilder().WithGoModuleFunction(withDeadline(f), params, i32x1).Export(name)
	}
	fn("proxy_log", p.log, i32, i32, i32)
	fn("proxy_get_log_level", p.getLogLevel, i32)
	fn("proxy_get_current_time_nanoseconds", p.currentTime, i32)
	fn("proxy_get_buffer_bytes", p.getBufferBytes, i32, i32, i32, i32, i32)
	fn("proxy_set_buffer_bytes", p.setBufferBytes, i32, i32, i32, i32, i32)
	fn("proxy_get_buffer_status", p.getBufferStatus, i32, i32, i32)
	fn("proxy_get_header_map_value", p.getHeaderMapValue, i32, i32, i32, i32, i32)
	fn("proxy_add_header_map_value", p.addHeaderMapValue, i32, i32, i32, i32, i32)
	fn("proxy_replace_header_map_value", p.replaceHeaderMapValue, i32, i32, i32, i32, i32)
	fn("proxy_remove_header_map_value", p.removeHeaderMapValue, i32, i32, i32)
	fn("proxy_get_header_map_pairs", p.getHeaderMapPairs, i32, i32, i32)
	fn("proxy_set_header_map_pairs", p.setHeaderMapPairs, i32, i32, i32)
	fn("proxy_get_header_map_size", p.getHeaderMapSize, i32, i32)
	fn("proxy_send_local_response", p.sendLocalResponse, i32, i32, i32, i32, i32, i32, i32, i32)
	fn("proxy_continue_stream", p.continueStream, i32)
	fn("proxy_get_property", p.getProperty, i32, i32, i32, i32)
	fn("proxy_done", p.proxyDone)
	fn("proxy_set_effective_context", p.setEffectiveContext, i32)
	fn("proxy_http_call", p.dispatch, i32, i32, i32, i32, i32, i32, i32, i32, i32, i32)
	fn("proxy_set_tick_period_milliseconds", p.setTickPeriod, i32)
	fn("proxy_get_shared_data", p.getSharedData, i32, i32, i32, i32, i32)
	fn("proxy_set_shared_data", p.setSharedData, i32, i32, i32, i32, i32)
	fn("proxy_register_shared_queue", p.registerQueue, i32, i32, i32)
	fn("proxy_resolve_shared_queue", p.resolveQueue, i32, i32, i32, i32, i32)
	fn("proxy_enqueue_shared_queue", p.enqueue, i32, i32, i32)
	fn("proxy_dequeue_shared_queue", p.dequeue, i32, i32, i32)
	fn("proxy_define_metric", p.defineMetric, i32, i32, i32, i32)
	fn("proxy_increment_metric", p.incrementMetric, i32, i64)
	fn("proxy_record_metric", p.recordMetric, i32, i64)
	fn("proxy_get_metric", p.getMetric, i32, i32)
	return b
}

func proxyExchange(ctx context.Context) *exchange {
	x, _ := ctx.Value(exchangeKey{}).(*exchange)
	return x
}

// give copies data into memory the guest allocates (through its
// proxy_on_memory_allocate) and stores the pointer and length at ptrOut
// and sizeOut, the ABI's way of returning bytes.
func give(ctx context.Context, mod api.Module, data []byte, ptrOut, sizeOut uint32) uint64 {
	var ptr uint32
	if len(data) > 0 {
		g, _ := ctx.Value(proxyGuestKey{}).(*proxyGuest)
		if g == nil {
			fail("proxy-wasm call outside a guest")
		}
		// An allocator that calls back into the host would recurse
		// through Go's stack, unmetered.
		if g.allocating {
			fail("proxy_on_memory_allocate called a host function that returns memory")
		}
		g.allocating = true
		res, err := g.alloc.Call(ctx, uint64(len(data)))
		g.allocating = false
		if err != nil {
			panic(err) // a trap or the deadline, inside the allocator
		}
		ptr = uint32(res[0])
		if ptr == 0 || !mod.Memory().Write(ptr, data) {
			return statusInvalidMemory
		}
	}
	mem := mod.Memory()
	if !mem.WriteUint32Le(ptrOut, ptr) || !mem.WriteUint32Le(sizeOut, uint32(len(data))) {
		return statusInvalidMemory
	}
	return statusOK
}

type proxyGuestKey struct{}

// proxyLevel maps proxy_log_level_t (trace 0 .. critical 5) onto slog.
func proxyLevel(level uint32) slog.Level {
	switch level {
	case 0, 1:
		return slog.LevelDebug
	case 2:
		return slog.LevelInfo
	case 3:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func (p proxyABI) log(ctx context.Context, mod api.Module, stack []uint64) {
	lvl := proxyLevel(uint32(stack[0]))
	msg, ok := mod.Memory().Read(uint32(stack[1]), uint32(stack[2]))
	if !ok {
		stack[0] = statusInvalidMemory
		return
	}
	if p.t != nil {
		p.t.guestLog.log(ctx, lvl, "wasm guest log", msg)
	}
	stack[0] = statusOK
}

func (p proxyABI) getLogLevel(ctx context.Context, mod api.Module, stack []uint64) {
	ptr, level := uint32(stack[0]), uint32(5)
	if p.t != nil {
		for _, l := range []struct {
			abi uint32
			s   slog.Level
		}{{1, slog.LevelDebug}, {2, slog.LevelInfo}, {3, slog.LevelWarn}, {4, slog.LevelError}} {
			if p.t.logger.Enabled(ctx, l.s) {
				level = l.abi
				break
			}
		}
	}
	stack[0] = statusOK
	if !mod.Memory().WriteUint32Le(ptr, level) {
		stack[0] = statusInvalidMemory
	}
}

func (p proxyABI) currentTime(_ context.Context, mod api.Module, stack []uint64) {
	ok := mod.Memory().WriteUint64Le(uint32(stack[0]), uint64(time.Now().UnixNano()))
	stack[0] = statusOK
	if !ok {
		stack[0] = statusInvalidMemory
	}
}

// buffer returns the bytes of a buffer type, and where a set goes.
func (p proxyABI) buffer(ctx context.Context, kind uint32) (*[]byte, bool) {
	switch kind {
	case bufferPluginConfig:
		if p.t == nil {
			return nil, false
		}
		cfg := p.t.spec.Config
		return &cfg, true
	case bufferVMConfig:
		var empty []byte
		return &empty, true
	case bufferCallResponseBody:
		x := proxyExchange(ctx)
		if x == nil || x.pw.call == nil || x.pw.call.err != nil {
			return nil, false // no call answered: Envoy has no response
		}
		return &x.pw.call.body, true
	case bufferRequestBody, bufferResponseBody:
		x := proxyExchange(ctx)
		if x == nil || x.pw == nil || x.pw.body == nil || x.pw.bodyKind != kind {
			return nil, false
		}
		return x.pw.body, true
	}
	return nil, false
}

// getBufferBytes returns up to size bytes from start. As in Envoy
// (proxy-wasm-cpp-host's get_buffer_bytes), a buffer that exists but has
// nothing there, being empty or shorter than start, is OK with no bytes; only
// a buffer the context does not have is NOT_FOUND.
func (p proxyABI) getBufferBytes(ctx context.Context, mod api.Module, stack []uint64) {
	kind, start, size := uint32(stack[0]), uint64(uint32(stack[1])), uint64(uint32(stack[2]))
	b, ok := p.buffer(ctx, kind)
	if !ok {
		stack[0] = statusNotFound
		return
	}
	start = min(start, uint64(len(*b)))
	end := min(start+size, uint64(len(*b)))
	stack[0] = give(ctx, mod, (*b)[start:end], uint32(stack[3]), uint32(stack[4]))
}

// setBufferBytes replaces size bytes at start with the value, as Envoy
// does: start 0 and size 0 prepends, start past the end appends.
func (p proxyABI) setBufferBytes(ctx context.Context, mod api.Module, stack []uint64) {
	kind, start, size := uint32(stack[0]), uint64(uint32(stack[1])), uint64(uint32(stack[2]))
	x := proxyExchange(ctx)
	b, ok := p.buffer(ctx, kind)
	if !ok || x == nil || (kind != bufferRequestBody && kind != bufferResponseBody) {
		stack[0] = statusNotFound
		return
	}
	value, ok := mod.Memory().Read(uint32(stack[3]), uint32(stack[4]))
	if !ok {
		stack[0] = statusInvalidMemory
		return
	}
	cur := *b
	start = min(start, uint64(len(cur)))
	end := min(start+size, uint64(len(cur)))
	if uint64(len(cur))-(end-start)+uint64(len(value)) > uint64(x.t.spec.MaxBuffer) {
		status := http.StatusRequestEntityTooLarge
		if kind == bufferResponseBody {
			status = http.StatusBadGateway
		}
		panic(&overflow{"body set by the guest", status})
	}
	out := make([]byte, 0, uint64(len(cur))-(end-start)+uint64(len(value)))
	out = append(append(append(out, cur[:start]...), value...), cur[end:]...)
	*b = out
	stack[0] = statusOK
}

func (p proxyABI) getBufferStatus(ctx context.Context, mod api.Module, stack []uint64) {
	b, ok := p.buffer(ctx, uint32(stack[0]))
	if !ok {
		stack[0] = statusNotFound
		return
	}
	mem := mod.Memory()
	if !mem.WriteUint32Le(uint32(stack[1]), uint32(len(*b))) || !mem.WriteUint32Le(uint32(stack[2]), 0) {
		stack[0] = statusInvalidMemory
		return
	}
	stack[0] = statusOK
}

// headerKind maps proxy_map_type_t onto the host's header kinds; ok is
// false for maps with no headers now (response headers before upstream
// answered, the gRPC and call maps).
func headerKind(x *exchange, mapType uint32) (uint32, bool) {
	if x == nil || x.r == nil || x.pw.effective != x.pw.id {
		return 0, false
	}
	switch mapType {
	case mapRequestHeaders:
		return kindRequest, true
	case mapRequestTrailers:
		return kindRequestTrailers, true
	case mapResponseHeaders:
		return kindResponse, x.afterNext && !x.pw.offStream
	case mapResponseTrailers:
		return kindResponseTrailers, x.afterNext && !x.pw.offStream
	}
	return 0, false
}

// mutable tells whether a map may still change: the request's only until
// it went upstream, the response's headers only until they went to the
// client; its trailers go out last.
func mutable(x *exchange, kind uint32) bool {
	switch kind {
	case kindRequest, kindRequestTrailers:
		return !x.afterNext
	case kindResponseTrailers:
		return true
	}
	return !x.pw.sent
}

func readString(mod api.Module, ptr, n uint64) (string, bool) {
	b, ok := mod.Memory().Read(uint32(ptr), uint32(n))
	return string(b), ok
}

func (p proxyABI) getHeaderMapValue(ctx context.Context, mod api.Module, stack []uint64) {
	x := proxyExchange(ctx)
	name, ok := readString(mod, stack[1], stack[2])
	if !ok {
		stack[0] = statusInvalidMemory
		return
	}
	if pairs, ok := callMap(x, uint32(stack[0])); ok {
		p.giveValue(ctx, mod, stack, pairsValues(pairs, name))
		return
	}
	kind, ok := headerKind(x, uint32(stack[0]))
	if !ok {
		stack[0] = statusNotFound
		return
	}
	p.giveValue(ctx, mod, stack, x.pwHeaderValues(kind, name))
}

func (p proxyABI) giveValue(ctx context.Context, mod api.Module, stack []uint64, values []string) {
	if values == nil {
		stack[0] = statusNotFound
		return
	}
	// Several values are joined with a comma, as Envoy does.
	stack[0] = give(ctx, mod, []byte(strings.Join(values, ",")), uint32(stack[3]), uint32(stack[4]))
}

// pwHeaderValues reads a header, with the pseudo-headers proxy-wasm
// filters expect of Envoy on request headers (":method", ":path",
// ":authority", ":scheme") and ":status" on response headers.
func (x *exchange) pwHeaderValues(kind uint32, name string) []string {
	name = strings.ToLower(name)
	if strings.HasPrefix(name, ":") {
		if v, ok := x.pseudo(kind, name); ok {
			return []string{v}
		}
		return nil
	}
	return x.headerValues(kind, name)
}

func (x *exchange) pseudo(kind uint32, name string) (string, bool) {
	switch {
	case kind == kindRequest && name == ":method":
		return x.r.Method, true
	case kind == kindRequest && name == ":path":
		return requestURI(x.r), true
	case kind == kindRequest && name == ":authority":
		return x.r.Host, true
	case kind == kindRequest && name == ":scheme":
		if x.r.TLS != nil {
			return "https", true
		}
		return "http", true
	case kind == kindResponse && name == ":status":
		return strconv.Itoa(x.pw.status), true
	}
	return "", false
}

func (x *exchange) setPseudo(kind uint32, name, value string) uint64 {
	if kind == kindRequest {
		x.holdHead(len(name) + len(value))
	}
	switch {
	case kind == kindRequest && name == ":method":
		if !validMethod(value) {
			return statusBadArgument
		}
		x.r.Method = value
	case kind == kindRequest && name == ":path":
		if setRequestURI(x.r, value) != nil {
			return statusBadArgument
		}
	case kind == kindRequest && name == ":authority":
		if !validHost(value) {
			return statusBadArgument
		}
		x.r.Host = value
	case kind == kindResponse && name == ":status":
		code, err := strconv.Atoi(value)
		if err != nil || code < 200 || code > 999 { // final, never 1xx
			return statusBadArgument
		}
		x.pw.status = code
	case kind == kindRequest && name == ":scheme":
	default:
		return statusBadArgument
	}
	return statusOK
}

func (p proxyABI) changeHeader(ctx context.Context, mod api.Module, stack []uint64, withValue, add bool) {
	x := proxyExchange(ctx)
	kind, ok := headerKind(x, uint32(stack[0]))
	if !ok || !mutable(x, kind) {
		stack[0] = statusNotFound
		return
	}
	name, ok := readString(mod, stack[1], stack[2])
	if !ok {
		stack[0] = statusInvalidMemory
		return
	}
	name = strings.ToLower(name)
	var value string
	if withValue {
		if value, ok = readString(mod, stack[3], stack[4]); !ok {
			stack[0] = statusInvalidMemory
			return
		}
	}
	stack[0] = x.pwSetHeader(kind, name, value, withValue, add)
}

func (x *exchange) pwSetHeader(kind uint32, name, value string, set, add bool) uint64 {
	if strings.HasPrefix(name, ":") {
		if !set {
			return statusBadArgument
		}
		return x.setPseudo(kind, name, value)
	}
	if !validHeader(name, value) || (set && !validField(kind, name, value)) {
		return statusBadArgument
	}
	if set {
		x.setHeader(kind, name, value, add)
	} else {
		x.removeHeader(kind, name)
	}
	return statusOK
}

// validHeader refuses a field no transport would send as it is: a name
// that is no token, a value with a control byte other than a tab (RFC
// 9110, 5.1 and 5.5). Sent, it would corrupt the message on the wire, or
// make net/http refuse it to an https:// backend, which the proxy would
// take for the backend failing.
func validHeader(name, value string) bool {
	return httpguts.ValidHeaderFieldName(name) && httpguts.ValidHeaderFieldValue(value)
}

func (p proxyABI) addHeaderMapValue(ctx context.Context, mod api.Module, stack []uint64) {
	p.changeHeader(ctx, mod, stack, true, true)
}

func (p proxyABI) replaceHeaderMapValue(ctx context.Context, mod api.Module, stack []uint64) {
	p.changeHeader(ctx, mod, stack, true, false)
}

func (p proxyABI) removeHeaderMapValue(ctx context.Context, mod api.Module, stack []uint64) {
	p.changeHeader(ctx, mod, stack, false, false)
}

// pairs lists a header map as proxy-wasm pairs: pseudo-headers first, then
// every value of every header, names in lower case.
func (x *exchange) pairs(kind uint32) [][2]string {
	var out [][2]string
	pseudos := []string{":authority", ":method", ":path", ":scheme"}
	if kind == kindResponse {
		pseudos = []string{":status"}
	}
	if kind == kindRequest || kind == kindResponse {
		for _, name := range pseudos {
			if v, ok := x.pseudo(kind, name); ok {
				out = append(out, [2]string{name, v})
			}
		}
	}
	for _, name := range x.headerNames(kind) {
		if kind == kindRequest && name == "host" {
			continue // it is :authority
		}
		for _, v := range x.headerValues(kind, name) {
			out = append(out, [2]string{name, v})
		}
	}
	return out
}

// pairCount is len(x.pairs(kind)), without building them.
func (x *exchange) pairCount(kind uint32) int {
	n := 0
	switch kind {
	case kindRequest:
		n = 4 // :authority, :method, :path, :scheme; Host is :authority
	case kindResponse:
		n = 1 // :status
	}
	var h http.Header
	switch kind {
	case kindRequest:
		h = x.r.Header
	case kindRequestTrailers:
		h = x.r.Trailer
	default:
		h = x.w.Header()
	}
	for name, values := range h {
		trailer := strings.HasPrefix(name, http.TrailerPrefix)
		if (kind == kindResponse && trailer) || (kind == kindResponseTrailers && !trailer) || isHost(kind, name) {
			continue
		}
		n += len(values)
	}
	return n
}

// encodePairs serializes a map as the spec says: a count, the lengths of
// each key and value, then each key and value followed by NUL.
func encodePairs(pairs [][2]string) []byte {
	size := 4
	for _, kv := range pairs {
		size += 8 + len(kv[0]) + len(kv[1]) + 2
	}
	out := make([]byte, 4, size)
	binary.LittleEndian.PutUint32(out, uint32(len(pairs)))
	for _, kv := range pairs {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(kv[0])))
		out = binary.LittleEndian.AppendUint32(out, uint32(len(kv[1])))
	}
	for _, kv := range pairs {
		out = append(append(out, kv[0]...), 0)
		out = append(append(out, kv[1]...), 0)
	}
	return out
}

var errPairs = errors.New("malformed serialized pairs")

// decodePairs reads serialized pairs, checking every length against the
// input before using it.
func decodePairs(b []byte) ([][2]string, error) {
	if len(b) == 0 || (len(b) == 1 && b[0] == 0) {
		return nil, nil
	}
	if len(b) < 4 {
		return nil, errPairs
	}
	// Each pair takes 8 bytes of lengths and two NULs, so the pairs made
	// room for take at most 3.2 times the input.
	n := uint64(binary.LittleEndian.Uint32(b))
	if n > uint64(len(b)-4)/10 {
		return nil, errPairs
	}
	lens, data := b[4:4+8*n], b[4+8*n:]
	out := make([][2]string, 0, n)
	for i := range n {
		kl, vl := uint64(binary.LittleEndian.Uint32(lens[8*i:])), uint64(binary.LittleEndian.Uint32(lens[8*i+4:]))
		if kl+vl+2 > uint64(len(data)) || data[kl] != 0 || data[kl+1+vl] != 0 {
			return nil, errPairs
		}
		out = append(out, [2]string{string(data[:kl]), string(data[kl+1 : kl+1+vl])})
		data = data[kl+vl+2:]
	}
	return out, nil
}

// mapPairs lists any map the guest may read.
func mapPairs(x *exchange, mapType uint32) ([][2]string, bool) {
	if pairs, ok := callMap(x, mapType); ok {
		return pairs, true
	}
	kind, ok := headerKind(x, mapType)
	if !ok {
		return nil, false
	}
	return x.pairs(kind), true
}

// callMap is a dispatched call's response headers or (none) trailers,
// inside its callback.
func callMap(x *exchange, mapType uint32) ([][2]string, bool) {
	if mapType != mapCallHeaders && mapType != mapCallTrailers {
		return nil, false
	}
	if x == nil || x.pw.call == nil || mapType == mapCallTrailers {
		return nil, true
	}
	return x.pw.call.headers, true
}

func pairsValues(pairs [][2]string, name string) []string {
	var out []string
	for _, kv := range pairs {
		if strings.EqualFold(kv[0], name) {
			out = append(out, kv[1])
		}
	}
	return out
}

func (p proxyABI) getHeaderMapPairs(ctx context.Context, mod api.Module, stack []uint64) {
	pairs, ok := mapPairs(proxyExchange(ctx), uint32(stack[0]))
	if !ok {
		stack[0] = statusNotFound
		return
	}
	stack[0] = give(ctx, mod, encodePairs(pairs), uint32(stack[1]), uint32(stack[2]))
}

func (p proxyABI) getHeaderMapSize(ctx context.Context, mod api.Module, stack []uint64) {
	pairs, ok := mapPairs(proxyExchange(ctx), uint32(stack[0]))
	if !ok {
		stack[0] = statusNotFound
		return
	}
	stack[0] = statusOK
	if !mod.Memory().WriteUint32Le(uint32(stack[1]), uint32(len(encodePairs(pairs)))) {
		stack[0] = statusInvalidMemory
	}
}

// setHeaderMapPairs replaces a whole map with the pairs given.
func (p proxyABI) setHeaderMapPairs(ctx context.Context, mod api.Module, stack []uint64) {
	x := proxyExchange(ctx)
	kind, ok := headerKind(x, uint32(stack[0]))
	if !ok || !mutable(x, kind) {
		stack[0] = statusNotFound
		return
	}
	b, ok := mod.Memory().Read(uint32(stack[1]), uint32(stack[2]))
	if !ok {
		stack[0] = statusInvalidMemory
		return
	}
	if uint64(len(b)) > uint64(x.t.spec.MaxBuffer) {
		panic(&overflow{"header map set by the guest", http.StatusInternalServerError})
	}
	pairs, err := decodePairs(b)
	if err != nil {
		stack[0] = statusBadArgument
		return
	}
	for _, name := range x.headerNames(kind) {
		if !(kind == kindRequest && name == "host") {
			x.removeHeader(kind, name)
		}
	}
	stack[0] = statusOK
	for _, kv := range pairs {
		if s := x.pwSetHeader(kind, strings.ToLower(kv[0]), kv[1], true, !strings.HasPrefix(kv[0], ":")); s != statusOK {
			stack[0] = s
		}
	}
}

// localResponse is a response the guest sent with proxy_send_local_response.
type localResponse struct {
	status  int
	body    []byte
	headers [][2]string
}

func (p proxyABI) sendLocalResponse(ctx context.Context, mod api.Module, stack []uint64) {
	x := proxyExchange(ctx)
	if x == nil || x.pw.sent {
		stack[0] = statusBadArgument
		return
	}
	status := int(uint32(stack[0]))
	body, ok1 := mod.Memory().Read(uint32(stack[3]), uint32(stack[4]))
	hdr, ok2 := mod.Memory().Read(uint32(stack[5]), uint32(stack[6]))
	if !ok1 || !ok2 {
		stack[0] = statusInvalidMemory
		return
	}
	if status < 200 || status > 599 {
		stack[0] = statusBadArgument
		return
	}
	if uint64(len(body))+uint64(len(hdr)) > uint64(x.t.spec.MaxBuffer) {
		panic(&overflow{"local response", http.StatusBadGateway})
	}
	pairs, err := decodePairs(hdr)
	if err != nil {
		stack[0] = statusBadArgument
		return
	}
	x.pw.local = &localResponse{status: status, body: append([]byte(nil), body...), headers: pairs}
	stack[0] = statusOK
}

// continueStream resumes the effective context's paused stream: from a
// dispatched call's callback, or from the root context's proxy_on_tick
// after proxy_set_effective_context. With nothing to resume (the root, or
// a stream callback) it does nothing, which Envoy also answers with OK.
func (p proxyABI) continueStream(ctx context.Context, _ api.Module, stack []uint64) {
	x := proxyExchange(ctx)
	if uint32(stack[0]) > 1 || x == nil {
		stack[0] = statusBadArgument
		return
	}
	if x.pw.effective == x.pw.id {
		x.pw.resumed = true
	}
	stack[0] = statusOK
}

// setEffectiveContext accepts the root and the context of the request the
// callback runs for (a paused one, when the root ticks): a filter may not
// reach into other requests, which here run on other instances anyway.
// Other ids get BAD_ARGUMENT, as in Envoy for a context that is gone.
func (p proxyABI) setEffectiveContext(ctx context.Context, _ api.Module, stack []uint64) {
	id := uint32(stack[0])
	x := proxyExchange(ctx)
	g, _ := ctx.Value(proxyGuestKey{}).(*proxyGuest)
	stack[0] = statusBadArgument
	if (x != nil && x.pw.id == id) || (g != nil && g.rootID == id) {
		if x != nil {
			x.pw.effective = id
		}
		stack[0] = statusOK
	}
}

func (p proxyABI) proxyDone(context.Context, api.Module, []uint64) {}

// getProperty answers the well-known properties the spec lists that a
// gateway knows, under the paths Envoy uses (segments separated by NUL).
func (p proxyABI) getProperty(ctx context.Context, mod api.Module, stack []uint64) {
	path, ok := readString(mod, stack[0], stack[1])
	if !ok {
		stack[0] = statusInvalidMemory
		return
	}
	// No property has more than three segments; a path of millions of
	// NULs must not become millions of strings.
	v, ok := p.property(proxyExchange(ctx), strings.SplitN(path, "\x00", 4))
	if !ok {
		stack[0] = statusNotFound
		return
	}
	stack[0] = give(ctx, mod, v, uint32(stack[2]), uint32(stack[3]))
}

func le64(v int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(v)) }

func (p proxyABI) property(x *exchange, path []string) ([]byte, bool) {
	if p.t == nil {
		return nil, false
	}
	key := strings.Join(path, ".")
	switch key {
	case "plugin_name":
		return []byte(p.t.spec.Name), true
	case "plugin_root_id":
		return []byte(p.t.spec.RootID), true
	case "plugin_vm_id":
		return []byte(p.t.spec.VMID), true
	case "node.id":
		return []byte(p.t.host.node.ID), p.t.host.node.ID != ""
	case "node.locality.region":
		return []byte(p.t.host.node.Region), p.t.host.node.Region != ""
	}
	if x == nil || x.r == nil {
		return nil, false
	}
	r := x.r
	switch key {
	case "request.path":
		return []byte(requestURI(r)), true
	case "request.url_path":
		return []byte(r.URL.EscapedPath()), true
	case "request.query":
		return []byte(r.URL.RawQuery), true
	case "request.method":
		return []byte(r.Method), true
	case "request.host":
		return []byte(r.Host), true
	case "request.scheme":
		v, _ := x.pseudo(kindRequest, ":scheme")
		return []byte(v), true
	case "request.protocol":
		return []byte(strings.TrimSuffix(r.Proto, ".0")), true
	case "request.id":
		return []byte(r.Header.Get("X-Request-Id")), r.Header.Get("X-Request-Id") != ""
	case "request.size":
		return le64(max(r.ContentLength, 0)), r.ContentLength >= 0
	case "response.code":
		return le64(int64(x.pw.status)), x.afterNext && x.pw.status != 0
	case "source.address":
		return []byte(r.RemoteAddr), true
	case "source.port":
		_, port, err := net.SplitHostPort(r.RemoteAddr)
		n, err2 := strconv.Atoi(port)
		return le64(int64(n)), err == nil && err2 == nil
	case "destination.address":
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			return []byte(a.String()), true
		}
		return nil, false
	case "connection.tls_version":
		if r.TLS == nil {
			return nil, false
		}
		return []byte(tlsVersion(r.TLS.Version)), true
	case "connection.requested_server_name":
		if r.TLS == nil {
			return nil, false
		}
		return []byte(r.TLS.ServerName), true
	case "connection.mtls":
		return []byte{boolByte(r.TLS != nil && len(r.TLS.VerifiedChains) > 0)}, true
	}
	if len(path) == 3 && path[0] == "request" && path[1] == "headers" {
		v := x.headerValues(kindRequest, path[2])
		return []byte(strings.Join(v, ",")), v != nil
	}
	if len(path) == 3 && path[0] == "response" && path[1] == "headers" && x.afterNext && !x.pw.offStream {
		v := x.headerValues(kindResponse, path[2])
		return []byte(strings.Join(v, ",")), v != nil
	}
	return nil, false
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

func tlsVersion(v uint16) string {
	switch v {
	case 0x0301:
		return "TLSv1"
	case 0x0302:
		return "TLSv1.1"
	case 0x0303:
		return "TLSv1.2"
	case 0x0304:
		return "TLSv1.3"
	}
	return ""
}
