//go:build wasip1

// Command pwaddheader is addheader's set rule as a proxy-wasm filter, to
// compare what the two ABIs cost for the same work: proxy_on_configure reads
// one "name: value" line; the header is set on the request going upstream
// and on the response going back.
package main

import (
	"strings"
	"unsafe"
)

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(kind, start, max uint32, data unsafe.Pointer, size *uint32) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(kind uint32, key *byte, keySize uint32, value *byte, valueSize uint32) uint32

const (
	bufferPluginConfig = 7
	mapRequestHeaders  = 0
	mapResponseHeaders = 2
)

var name, value string

//go:wasmexport proxy_abi_version_0_2_1
func abiVersion() {}

//go:wasmexport proxy_on_memory_allocate
func onMemoryAllocate(size uint32) *byte { return &make([]byte, max(size, 1))[0] }

//go:wasmexport proxy_on_context_create
func onContextCreate(id, parent uint32) {}

//go:wasmexport proxy_on_vm_start
func onVMStart(id, size uint32) uint32 { return 1 }

//go:wasmexport proxy_on_configure
func onConfigure(id, size uint32) uint32 {
	var data *byte
	var n uint32
	if proxyGetBufferBytes(bufferPluginConfig, 0, size, unsafe.Pointer(&data), &n) != 0 {
		return 0
	}
	k, v, ok := strings.Cut(string(unsafe.Slice(data, n)), ":")
	name, value = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
	if !ok || name == "" {
		return 0
	}
	return 1
}

//go:wasmexport proxy_on_request_headers
func onRequestHeaders(id, n, eos uint32) uint32 { return set(mapRequestHeaders) }

//go:wasmexport proxy_on_response_headers
func onResponseHeaders(id, n, eos uint32) uint32 { return set(mapResponseHeaders) }

func set(kind uint32) uint32 {
	proxyReplaceHeaderMapValue(kind, unsafe.StringData(name), uint32(len(name)), unsafe.StringData(value), uint32(len(value)))
	return 0 // Continue
}

func main() {}
