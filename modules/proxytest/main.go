//go:build wasip1

// Command proxytest is a proxy-wasm 0.2.1 filter written against the raw
// proxy_* imports, no SDK: the host's tests drive it through every host
// function it offers. By path:
//
//	/deny       answers 403 with proxy_send_local_response
//	/pause-body pauses the request headers and every body chunk until the
//	            end of the stream, then prefixes the whole body with "BODY:"
//	/auth       asks the "authz" cluster (GET /check) and pauses; a 200
//	            resumes the request with x-auth set to the answer's body,
//	            anything else answers 401
//	/shared     exercises shared data (CAS), a shared queue and metrics,
//	            answering with what each returned
//	/postpone   pauses the request headers; a later tick (config "tick")
//	            stamps x-resumed and resumes it from the root context
//	/stall      pauses the request headers and never resumes them
//	anything    stamps request and response headers (see onRequestHeaders)
package main

import (
	"encoding/binary"
	"strconv"
	"unsafe"
)

//go:wasmimport env proxy_log
func proxyLog(level uint32, msg *byte, size uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(kind, start, max uint32, data unsafe.Pointer, size *uint32) uint32

//go:wasmimport env proxy_set_buffer_bytes
func proxySetBufferBytes(kind, start, size uint32, data *byte, n uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(kind uint32, key *byte, keySize uint32, data unsafe.Pointer, size *uint32) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(kind uint32, key *byte, keySize uint32, value *byte, valueSize uint32) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(kind uint32, key *byte, keySize uint32, value *byte, valueSize uint32) uint32

//go:wasmimport env proxy_remove_header_map_value
func proxyRemoveHeaderMapValue(kind uint32, key *byte, keySize uint32) uint32

//go:wasmimport env proxy_get_header_map_pairs
func proxyGetHeaderMapPairs(kind uint32, data unsafe.Pointer, size *uint32) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status uint32, details *byte, detailsSize uint32, body *byte, bodySize uint32, headers *byte, headersSize uint32, grpc int32) uint32

//go:wasmimport env proxy_http_call
func proxyHTTPCall(cluster *byte, clusterSize uint32, headers *byte, headersSize uint32, body *byte, bodySize uint32, trailers *byte, trailersSize uint32, timeout uint32, id *uint32) uint32

//go:wasmimport env proxy_continue_stream
func proxyContinueStream(stream uint32) uint32

//go:wasmimport env proxy_set_effective_context
func proxySetEffectiveContext(id uint32) uint32

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(key *byte, keySize uint32, data unsafe.Pointer, size *uint32, cas *uint32) uint32

//go:wasmimport env proxy_set_shared_data
func proxySetSharedData(key *byte, keySize uint32, value *byte, valueSize uint32, cas uint32) uint32

//go:wasmimport env proxy_register_shared_queue
func proxyRegisterSharedQueue(name *byte, nameSize uint32, id *uint32) uint32

//go:wasmimport env proxy_resolve_shared_queue
func proxyResolveSharedQueue(vm *byte, vmSize uint32, name *byte, nameSize uint32, id *uint32) uint32

//go:wasmimport env proxy_enqueue_shared_queue
func proxyEnqueueSharedQueue(id uint32, value *byte, size uint32) uint32

//go:wasmimport env proxy_dequeue_shared_queue
func proxyDequeueSharedQueue(id uint32, data unsafe.Pointer, size *uint32) uint32

//go:wasmimport env proxy_define_metric
func proxyDefineMetric(kind uint32, name *byte, nameSize uint32, id *uint32) uint32

//go:wasmimport env proxy_increment_metric
func proxyIncrementMetric(id uint32, delta int64) uint32

//go:wasmimport env proxy_record_metric
func proxyRecordMetric(id uint32, value uint64) uint32

//go:wasmimport env proxy_get_metric
func proxyGetMetric(id uint32, value *uint64) uint32

//go:wasmimport env proxy_set_tick_period_milliseconds
func proxySetTickPeriodMilliseconds(period uint32) uint32

//go:wasmimport env proxy_get_property
func proxyGetProperty(path *byte, pathSize uint32, data unsafe.Pointer, size *uint32) uint32

const (
	requestHeaders  = 0
	responseHeaders = 2
	continueAction  = 0
	pauseAction     = 1
)

// held keeps what the host allocated alive until the context ends.
var held [][]byte

//go:wasmexport proxy_abi_version_0_2_1
func abiVersion() {}

//go:wasmexport proxy_on_memory_allocate
func onMemoryAllocate(size uint32) *byte {
	b := make([]byte, size)
	held = append(held, b)
	return &b[0]
}

var config string

//go:wasmexport proxy_on_context_create
func onContextCreate(id, parent uint32) {}

//go:wasmexport proxy_on_vm_start
func onVMStart(id, size uint32) uint32 { return 1 }

//go:wasmexport proxy_on_configure
func onConfigure(id, size uint32) uint32 {
	config = string(buffer(7, size))
	switch config {
	case "tick":
		// Tick every 10 ms; each tick enqueues, each queue_ready dequeues.
		ticks, queueReady = metric(0, "ticks"), metric(0, "queue_ready")
		tickQueue = register("ticks")
		proxySetTickPeriodMilliseconds(10)
	case "tick-call":
		// Every tick asks the "authz" cluster, outside any request.
		tickCalls = metric(0, "tick_calls")
		proxySetTickPeriodMilliseconds(10)
	}
	return 1
}

var ticks, queueReady, tickQueue, tickCalls uint32

// postponed are the request contexts /postpone paused; ready those to
// resume on the next tick.
var postponed, ready []uint32

func metric(kind uint32, name string) uint32 {
	var id uint32
	proxyDefineMetric(kind, ptr(name), uint32(len(name)), &id)
	return id
}

func register(name string) uint32 {
	var id uint32
	proxyRegisterSharedQueue(ptr(name), uint32(len(name)), &id)
	return id
}

//go:wasmexport proxy_on_tick
func onTick(root uint32) {
	if config == "tick-call" {
		cluster := "authz"
		hdr := serialize([][2]string{{":method", "GET"}, {":path", "/tick"}, {":authority", "authz"}})
		var callID uint32
		proxyHTTPCall(ptr(cluster), uint32(len(cluster)), &hdr[0], uint32(len(hdr)), nil, 0, nil, 0, 5000, &callID)
		return
	}
	// A postponed request sits out one tick, whose changes act for the
	// root and must not reach it, and is resumed on the next.
	for _, id := range ready {
		if proxySetEffectiveContext(id) == 0 {
			addHeader(requestHeaders, "x-resumed", "tick")
			proxyContinueStream(0)
		}
	}
	ready = append(ready[:0], postponed...)
	postponed = postponed[:0]
	if len(ready) > 0 {
		proxySetEffectiveContext(root)
		addHeader(requestHeaders, "x-resumed", "root")
		proxyContinueStream(0)
	}
	proxyIncrementMetric(ticks, 1)
	item := "tick"
	proxyEnqueueSharedQueue(tickQueue, ptr(item), uint32(len(item)))
}

//go:wasmexport proxy_on_queue_ready
func onQueueReady(root, queue uint32) {
	if queue != tickQueue {
		return // /shared dequeues its own item
	}
	var data *byte
	var n uint32
	for proxyDequeueSharedQueue(queue, unsafe.Pointer(&data), &n) == 0 {
		proxyIncrementMetric(queueReady, 1)
	}
}

// sharedReport runs each shared-state call and reports what it returned.
func sharedReport() string {
	key := "k"
	get := func() (string, uint32, uint32) {
		var data *byte
		var n, cas uint32
		s := proxyGetSharedData(ptr(key), 1, unsafe.Pointer(&data), &n, &cas)
		return string(fromHost(data, n)), cas, s
	}
	set := func(v string, cas uint32) uint32 {
		return proxySetSharedData(ptr(key), 1, ptr(v), uint32(len(v)), cas)
	}
	u := func(v uint32) string { return strconv.Itoa(int(v)) }
	_, _, missing := get()
	set("v1", 0)
	_, cas, _ := get()
	mismatch := set("v2", cas+1)
	ok := set("v2", cas)
	v, _, _ := get()
	report := "missing=" + u(missing) + " mismatch=" + u(mismatch) + " set=" + u(ok) + " value=" + v

	q := register("q")
	var resolved uint32
	vm, name := property("plugin_vm_id"), "q" // registered under its vm_id
	proxyResolveSharedQueue(ptr(vm), uint32(len(vm)), ptr(name), 1, &resolved)
	item := "item"
	proxyEnqueueSharedQueue(q, ptr(item), uint32(len(item)))
	var data *byte
	var n uint32
	proxyDequeueSharedQueue(q, unsafe.Pointer(&data), &n)
	got := string(fromHost(data, n))
	empty := proxyDequeueSharedQueue(q, unsafe.Pointer(&data), &n)
	report += " resolved=" + strconv.FormatBool(resolved == q) + " item=" + got + " empty=" + u(empty)

	c, g, h := metric(0, "shared_calls"), metric(1, "level"), metric(2, "sizes")
	proxyIncrementMetric(c, 2)
	proxyRecordMetric(c, 3)
	negative := proxyIncrementMetric(c, -1)
	proxyRecordMetric(g, 7)
	proxyIncrementMetric(g, -2)
	proxyRecordMetric(h, 10)
	var cv, gv, hv uint64
	proxyGetMetric(c, &cv)
	proxyGetMetric(g, &gv)
	hs := proxyGetMetric(h, &hv)
	report += " counter=" + strconv.FormatUint(cv, 10) + " negative=" + u(negative) + " gauge=" + strconv.FormatUint(gv, 10) + " histogram_get=" + u(hs)
	return report
}

func ptr(s string) *byte {
	if s == "" {
		return nil
	}
	return unsafe.StringData(s)
}

func fromHost(data *byte, size uint32) []byte {
	if size == 0 {
		return nil
	}
	return unsafe.Slice(data, size)
}

func buffer(kind, size uint32) []byte {
	var data *byte
	var n uint32
	if proxyGetBufferBytes(kind, 0, size, unsafe.Pointer(&data), &n) != 0 {
		return nil
	}
	return fromHost(data, n)
}

func header(kind uint32, name string) (string, bool) {
	var data *byte
	var n uint32
	if proxyGetHeaderMapValue(kind, ptr(name), uint32(len(name)), unsafe.Pointer(&data), &n) != 0 {
		return "", false
	}
	return string(fromHost(data, n)), true
}

func property(path string) string {
	var data *byte
	var n uint32
	if proxyGetProperty(ptr(path), uint32(len(path)), unsafe.Pointer(&data), &n) != 0 {
		return "<none>"
	}
	return string(fromHost(data, n))
}

func addHeader(kind uint32, name, value string) {
	proxyAddHeaderMapValue(kind, ptr(name), uint32(len(name)), ptr(value), uint32(len(value)))
}

func replaceHeader(kind uint32, name, value string) {
	proxyReplaceHeaderMapValue(kind, ptr(name), uint32(len(name)), ptr(value), uint32(len(value)))
}

func logInfo(msg string) { proxyLog(2, ptr(msg), uint32(len(msg))) }

// pairs decodes the serialized map the host returns.
func pairs(kind uint32) [][2]string {
	var data *byte
	var n uint32
	if proxyGetHeaderMapPairs(kind, unsafe.Pointer(&data), &n) != 0 || n < 4 {
		return nil
	}
	b := fromHost(data, n)
	count := binary.LittleEndian.Uint32(b)
	out := make([][2]string, 0, count)
	rest := b[4+8*count:]
	for i := range count {
		kl := binary.LittleEndian.Uint32(b[4+8*i:])
		vl := binary.LittleEndian.Uint32(b[8+8*i:])
		out = append(out, [2]string{string(rest[:kl]), string(rest[kl+1 : kl+1+vl])})
		rest = rest[kl+vl+2:]
	}
	return out
}

func serialize(kv [][2]string) []byte {
	out := binary.LittleEndian.AppendUint32(nil, uint32(len(kv)))
	for _, p := range kv {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(p[0])))
		out = binary.LittleEndian.AppendUint32(out, uint32(len(p[1])))
	}
	for _, p := range kv {
		out = append(append(out, p[0]...), 0)
		out = append(append(out, p[1]...), 0)
	}
	return out
}

var path string

//go:wasmexport proxy_on_request_headers
func onRequestHeaders(id, n, eos uint32) uint32 {
	// An instance serves one request at a time: what the last one left
	// must not reach this one.
	requestTrailer = ""
	path, _ = header(requestHeaders, ":path")
	switch path {
	case "/deny":
		body, hdr := "denied by proxytest\n", serialize([][2]string{{"x-denied", "yes"}})
		proxySendLocalResponse(403, nil, 0, ptr(body), uint32(len(body)), &hdr[0], uint32(len(hdr)), -1)
		return pauseAction
	case "/pause-body", "/stall":
		return pauseAction
	case "/postpone":
		postponed = append(postponed, id)
		return pauseAction
	case "/shared":
		body := sharedReport()
		proxySendLocalResponse(200, nil, 0, ptr(body), uint32(len(body)), nil, 0, -1)
		return pauseAction
	case "/auth":
		cluster := "authz"
		hdr := serialize([][2]string{{":method", "GET"}, {":path", "/check"}, {":authority", "authz"}, {"x-asked-by", "proxytest"}})
		var callID uint32
		if proxyHTTPCall(ptr(cluster), uint32(len(cluster)), &hdr[0], uint32(len(hdr)), nil, 0, nil, 0, 5000, &callID) != 0 {
			logInfo("proxytest: dispatch refused")
			return continueAction
		}
		httpContext = id
		return pauseAction
	}
	names := ""
	for _, kv := range pairs(requestHeaders) {
		names += kv[0] + ";"
	}
	addHeader(requestHeaders, "x-pw-config", config)
	addHeader(requestHeaders, "x-pw-pairs", names)
	addHeader(requestHeaders, "x-pw-props", property("plugin_name")+"|"+property("request\x00method")+"|"+
		property("request\x00protocol")+"|"+property("node\x00id")+"|"+property("node\x00locality\x00region"))
	replaceHeader(requestHeaders, "x-replace", "replaced")
	name := "x-remove"
	proxyRemoveHeaderMapValue(requestHeaders, ptr(name), uint32(len(name)))
	logInfo("proxytest saw " + path)
	return continueAction
}

//go:wasmexport proxy_on_request_body
func onRequestBody(id, size, eos uint32) uint32 {
	if path != "/pause-body" {
		return continueAction
	}
	if eos == 0 {
		return pauseAction
	}
	prefix := "BODY(" + strconv.Itoa(int(size)) + "):"
	proxySetBufferBytes(0, 0, 0, ptr(prefix), uint32(len(prefix)))
	return continueAction
}

//go:wasmexport proxy_on_response_headers
func onResponseHeaders(id, n, eos uint32) uint32 {
	status, _ := header(responseHeaders, ":status")
	addHeader(responseHeaders, "x-pw-status", status)
	return continueAction
}

var requestTrailer string

//go:wasmexport proxy_on_request_trailers
func onRequestTrailers(id, n uint32) uint32 {
	requestTrailer, _ = header(1, "x-req-trailer")
	return continueAction
}

// onResponseTrailers passes the request's trailer x-req-trailer, and the
// upstream's x-up-trailer, back as the response trailer x-pw-trailer.
//
//go:wasmexport proxy_on_response_trailers
func onResponseTrailers(id, n uint32) uint32 {
	up, _ := header(3, "x-up-trailer")
	replaceHeader(3, "x-pw-trailer", requestTrailer+"+"+up)
	return continueAction
}

//go:wasmexport proxy_on_response_body
func onResponseBody(id, size, eos uint32) uint32 { return continueAction }

var httpContext uint32

//go:wasmexport proxy_on_http_call_response
func onHTTPCallResponse(root, callID, headers, bodySize, trailers uint32) {
	if config == "tick-call" {
		if status, _ := header(6, ":status"); status == "200" {
			proxyIncrementMetric(tickCalls, 1)
		}
		return
	}
	proxySetEffectiveContext(httpContext)
	status, _ := header(6, ":status")
	if status != "200" {
		body := "no entry: authz said " + status + "\n"
		proxySendLocalResponse(401, nil, 0, ptr(body), uint32(len(body)), nil, 0, -1)
		return
	}
	var data *byte
	var n uint32
	got := proxyGetBufferBytes(4, 0, bodySize, unsafe.Pointer(&data), &n)
	auth := string(fromHost(data, n))
	if auth == "" {
		auth = "<empty:" + strconv.Itoa(int(got)) + ">" // Envoy: OK, no bytes
	}
	addHeader(requestHeaders, "x-auth", auth)
	proxyContinueStream(0)
}

//go:wasmexport proxy_on_done
func onDone(id uint32) uint32 { return 1 }

//go:wasmexport proxy_on_log
func onLog(id uint32) {}

//go:wasmexport proxy_on_delete
func onDelete(id uint32) { held = held[:0] }

func main() {}
