//go:build wasip1

// Package sdk writes http-wasm transforms in standard Go, without TinyGo.
//
// A transform is a main package built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o t.wasm .
//
// (or `perigee wasm build DIR -o t.wasm`). It registers its handlers in
// init, because a c-shared module never runs main:
//
//	func init() {
//		sdk.HandleRequest(func(req sdk.Request, resp sdk.Response) sdk.Action {
//			req.Headers().Set("x-edge", "fra-1")
//			return sdk.Continue
//		})
//	}
//
//	func main() {}
//
// The host calls the request handler before the request goes on; the
// response handler, if any, after the response came back.
package sdk

import (
	"io"
	"strings"
)

// Action tells the host what to do after the request handler.
type Action uint64

const (
	// Stop ends the chain here: the guest has written the response (a
	// denial, a redirect) and nothing downstream runs.
	Stop Action = 0
	// Continue passes the request on.
	Continue Action = 1
)

// ContinueWith passes the request on and hands ctx to the response handler,
// to correlate the two calls.
func ContinueWith(ctx uint32) Action { return Action(uint64(ctx)<<32 | 1) }

// Features the guest may ask the host for.
type Features uint32

const (
	// BufferRequest keeps the request body for downstream after Body().Read.
	BufferRequest Features = 1 << iota
	// BufferResponse holds the response so the response handler can read
	// and rewrite its status, headers and body.
	BufferResponse
	// Trailers gives access to trailers.
	Trailers
)

// Enable asks the host for features and returns those now enabled. Called
// in init, they hold for every request; called in the request handler, for
// that request only.
func Enable(f Features) Features { return Features(enableFeatures(uint32(f))) }

var (
	requestHandler  func(Request, Response) Action
	responseHandler func(ctx uint32, req Request, resp Response, isError bool)
)

// HandleRequest sets the function called for each request. Without one,
// requests pass through.
func HandleRequest(fn func(req Request, resp Response) Action) { requestHandler = fn }

// HandleResponse sets the function called with the response of a request
// the request handler let through. isError reports that the host failed to
// produce a response.
func HandleResponse(fn func(ctx uint32, req Request, resp Response, isError bool)) {
	responseHandler = fn
}

//go:wasmexport handle_request
func handleRequest() uint64 {
	if requestHandler == nil {
		return uint64(Continue)
	}
	return uint64(requestHandler(Request{}, Response{}))
}

//go:wasmexport handle_response
func handleResponse(ctx uint32, isError uint32) {
	if responseHandler != nil {
		responseHandler(ctx, Request{}, Response{}, isError != 0)
	}
}

// scratch is reused by every getter: a guest handles one call at a time.
var scratch = make([]byte, 2048)

// getString calls a get_* function, growing the buffer when the value did
// not fit.
func getString(get func(buf []byte) uint32) string {
	n := get(scratch)
	if int(n) > len(scratch) {
		scratch = make([]byte, n)
		n = get(scratch)
	}
	return string(scratch[:n])
}

func getList(get func(buf []byte) uint64) []string {
	countLen := get(scratch)
	n := uint32(countLen)
	if int(n) > len(scratch) {
		scratch = make([]byte, n)
		countLen = get(scratch)
		n = uint32(countLen)
	}
	if countLen>>32 == 0 {
		return nil
	}
	list := strings.Split(string(scratch[:n]), "\x00")
	return list[:len(list)-1] // the last NUL ends the list
}

// Config returns what the host configured for this transform: a string as
// written, a mapping as JSON.
func Config() []byte {
	n := getConfig(ptr(scratch), uint32(len(scratch)))
	if int(n) > len(scratch) {
		buf := make([]byte, n)
		getConfig(ptr(buf), n)
		return buf
	}
	return append([]byte(nil), scratch[:n]...)
}

// Level is a log level, as the ABI numbers them.
type Level int32

const (
	LevelDebug Level = -1
	LevelInfo  Level = 0
	LevelWarn  Level = 1
	LevelError Level = 2
)

// Log writes msg to the host's log.
func Log(level Level, msg string) { log(int32(level), strPtr(msg), uint32(len(msg))) }

// RefuseToLoad logs why the transform cannot run and stops it from loading.
// Called in init, for a config it cannot follow whole: serving with part
// of it (a deny list short of an entry) would be worse than not serving.
func RefuseToLoad(why string) {
	Log(LevelError, why)
	panic(why)
}

// LogEnabled tells whether the host keeps messages at level, to skip
// building ones it would drop.
func LogEnabled(level Level) bool { return logEnabled(int32(level)) == 1 }

// Request is the request being handled.
type Request struct{}

// Method is the request method, such as GET.
func (Request) Method() string {
	return getString(func(b []byte) uint32 { return getMethod(ptr(b), uint32(len(b))) })
}

// SetMethod changes the method sent downstream.
func (Request) SetMethod(m string) { setMethod(strPtr(m), uint32(len(m))) }

// URI is the escaped path and query, such as /v1/hi?name=panda.
func (Request) URI() string {
	return getString(func(b []byte) uint32 { return getURI(ptr(b), uint32(len(b))) })
}

// Path is the URI without its query.
func (r Request) Path() string {
	p, _, _ := strings.Cut(r.URI(), "?")
	return p
}

// SetURI changes the path and query sent downstream.
func (Request) SetURI(uri string) { setURI(strPtr(uri), uint32(len(uri))) }

// Protocol is the HTTP version, such as HTTP/1.1 or HTTP/3.0.
func (Request) Protocol() string {
	return getString(func(b []byte) uint32 { return getProtocolVersion(ptr(b), uint32(len(b))) })
}

// SourceAddr is the client's address, such as 192.0.2.1:51234.
func (Request) SourceAddr() string {
	return getString(func(b []byte) uint32 { return getSourceAddr(ptr(b), uint32(len(b))) })
}

// Headers are the request headers.
func (Request) Headers() Header { return Header{kind: 0} }

// Trailers are the request trailers; they need the Trailers feature.
func (Request) Trailers() Header { return Header{kind: 2} }

// Body is the request body.
func (Request) Body() Body { return Body{kind: 0} }

// Response is the response: the guest's own in the request handler, the
// downstream one in the response handler.
type Response struct{}

// StatusCode is the response status; after the request went downstream it
// needs the BufferResponse feature.
func (Response) StatusCode() int { return int(getStatusCode()) }

// SetStatusCode sets the status of the guest's own response, or with
// BufferResponse rewrites the downstream one.
func (Response) SetStatusCode(code int) { setStatusCode(uint32(code)) }

// Headers are the response headers.
func (Response) Headers() Header { return Header{kind: 1} }

// Trailers are the response trailers; they need the Trailers feature.
func (Response) Trailers() Header { return Header{kind: 3} }

// Body is the response body.
func (Response) Body() Body { return Body{kind: 1} }

// Header is one kind of header fields. Names are matched without regard to
// case and listed in lower case.
type Header struct{ kind uint32 }

// Names lists the field names.
func (h Header) Names() []string {
	return getList(func(b []byte) uint64 { return getHeaderNames(h.kind, ptr(b), uint32(len(b))) })
}

// Values lists the values of a field.
func (h Header) Values(name string) []string {
	return getList(func(b []byte) uint64 {
		return getHeaderValues(h.kind, strPtr(name), uint32(len(name)), ptr(b), uint32(len(b)))
	})
}

// Get returns a field's first value and whether it is present.
func (h Header) Get(name string) (string, bool) {
	v := h.Values(name)
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// Set replaces a field's values with value.
func (h Header) Set(name, value string) {
	setHeaderValue(h.kind, strPtr(name), uint32(len(name)), strPtr(value), uint32(len(value)))
}

// Add appends a value to a field.
func (h Header) Add(name, value string) {
	addHeaderValue(h.kind, strPtr(name), uint32(len(name)), strPtr(value), uint32(len(value)))
}

// Del removes a field.
func (h Header) Del(name string) { removeHeader(h.kind, strPtr(name), uint32(len(name))) }

// Body is a request or response body. Reading is a stream: each Read goes
// on where the last stopped. The first Write replaces the body, later ones
// append.
type Body struct{ kind uint32 }

// Read reads from the body; it returns io.EOF at the end.
func (b Body) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	eofLen := readBody(b.kind, ptr(p), uint32(len(p)))
	n := int(uint32(eofLen))
	if eofLen>>32 != 0 {
		return n, io.EOF
	}
	return n, nil
}

// ReadAll reads the rest of the body.
func (b Body) ReadAll() []byte {
	out, _ := io.ReadAll(b) // Read never fails but with io.EOF
	return out
}

// Write writes p to the body.
func (b Body) Write(p []byte) (int, error) {
	writeBody(b.kind, ptr(p), uint32(len(p)))
	return len(p), nil
}

// WriteString writes s to the body.
func (b Body) WriteString(s string) (int, error) {
	writeBody(b.kind, strPtr(s), uint32(len(s)))
	return len(s), nil
}
