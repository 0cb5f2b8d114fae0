package wasm

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero/api"
	"golang.org/x/net/http/httpguts"
)

// exchange is one request's passage through one transform: what the host
// functions read and change while the guest runs.
type exchange struct {
	t        *Transform
	inst     *instance
	r        *http.Request
	w        http.ResponseWriter // the response toward the client
	root     http.ResponseWriter // the server's own, whose connection deadlines bound blocking I/O
	features Features

	afterNext bool
	// headerBytes counts what the guest has set on the request's and the
	// response's heads (header names and values, method, URI), which the
	// host keeps for the request, within max_buffer.
	headerBytes uint64

	// Request body: origBody is what the client sends; kept holds what the
	// guest read with buffer_request on, to be replayed downstream; newBody
	// replaces the body once the guest writes one.
	origBody io.ReadCloser
	kept     bytes.Buffer
	newBody  *bytes.Buffer
	bodyEOF  bool

	// The guest's own response, when it answers instead of calling next.
	status  int
	ownBody bytes.Buffer

	// buf holds the downstream response when buffer_response is on.
	buf         *bufferedWriter
	respRead    int
	respWritten bool

	// pw is the proxy-wasm side of the request, in pwState; nil for
	// http-wasm.
	pw      *proxyState
	pwState proxyState

	stack [5]uint64
}

type exchangeKey struct{}

var exchanges = sync.Pool{New: func() any { return &exchange{} }}

func newExchange(t *Transform, inst *instance, w http.ResponseWriter, r *http.Request) *exchange {
	x := exchanges.Get().(*exchange)
	x.t, x.inst, x.w, x.r = t, inst, w, r
	x.root = w
	if b, ok := w.(*bufferedWriter); ok {
		x.root = b.root
	}
	x.features = inst.features
	x.origBody = r.Body
	return x
}

func (x *exchange) free() {
	kept, own := x.kept, x.ownBody
	*x = exchange{kept: reuse(kept), ownBody: reuse(own)}
	exchanges.Put(x)
}

// pooledBuffer is the largest buffer an idle exchange keeps: one request
// with a large body must not pin max_buffer per pooled exchange.
const pooledBuffer = 64 << 10

func reuse(b bytes.Buffer) bytes.Buffer {
	if b.Cap() > pooledBuffer {
		return bytes.Buffer{}
	}
	b.Reset()
	return b
}

// overflow is what a host function panics with when a body the host would
// hold passes the transform's max_buffer; the request is answered status.
type overflow struct {
	what   string
	status int
}

func (e *overflow) Error() string { return e.what + " is larger than max_buffer" }

// hold appends p to b, a body the host keeps for the request, within
// max_buffer.
func (x *exchange) hold(b *bytes.Buffer, p []byte, what string, status int) {
	if uint64(b.Len())+uint64(len(p)) > uint64(x.t.spec.MaxBuffer) {
		panic(&overflow{what, status})
	}
	b.Write(p)
}

// call runs one guest export under the transform's deadline.
func (x *exchange) call(fn api.Function, stack []uint64) error {
	return x.inst.ctx.call(x, fn, stack, x.t.spec.Timeout.D())
}

func (x *exchange) mustBeforeNext(what string) {
	if x.afterNext {
		fail("%s after the request went downstream", what)
	}
}

// requestURI is the path and query as the client sent them, escaped.
func requestURI(r *http.Request) string {
	uri := r.URL.EscapedPath()
	if uri == "" {
		uri = "/"
	}
	if r.URL.ForceQuery || r.URL.RawQuery != "" {
		uri += "?" + r.URL.RawQuery
	}
	return uri
}

func setRequestURI(r *http.Request, uri string) error {
	if uri == "" {
		uri = "/"
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return err
	}
	r.RequestURI = uri
	r.URL.Path, r.URL.RawPath = u.Path, u.RawPath
	r.URL.RawQuery, r.URL.ForceQuery = u.RawQuery, u.ForceQuery
	return nil
}

// header returns the map a header kind lives in. Response headers and
// response trailers share the client writer's map, trailers under
// http.TrailerPrefix, which is how net/http sends undeclared trailers.
func (x *exchange) header(kind uint32) http.Header {
	switch kind {
	case kindRequest:
		return x.r.Header
	case kindResponse, kindResponseTrailers:
		return x.w.Header()
	case kindRequestTrailers:
		if x.r.Trailer == nil {
			x.r.Trailer = http.Header{}
		}
		return x.r.Trailer
	}
	fail("unknown header kind %d", kind)
	return nil
}

func trailerKey(kind uint32, name string) string {
	if kind == kindResponseTrailers {
		return http.TrailerPrefix + textproto.CanonicalMIMEHeaderKey(name)
	}
	return name
}

// isHost tells whether a request header is Host, which net/http keeps in
// Request.Host rather than in the map.
func isHost(kind uint32, name string) bool {
	return kind == kindRequest && strings.EqualFold(name, "Host")
}

// headerNames lists names in lower case, as HTTP/2 and HTTP/3 carry them
// and as the ABI's conformance kit expects.
func (x *exchange) headerNames(kind uint32) []string {
	h := x.header(kind)
	names := make([]string, 0, len(h)+1)
	if kind == kindRequest && x.r.Host != "" {
		names = append(names, "host")
	}
	for name := range h {
		trailer := strings.HasPrefix(name, http.TrailerPrefix)
		switch {
		case kind == kindResponse && trailer:
		case kind == kindResponseTrailers && trailer:
			names = append(names, strings.ToLower(name[len(http.TrailerPrefix):]))
		case kind != kindResponseTrailers:
			names = append(names, strings.ToLower(name))
		}
	}
	slices.Sort(names)
	return names
}

func (x *exchange) headerValues(kind uint32, name string) []string {
	if isHost(kind, name) {
		if x.r.Host == "" {
			return nil
		}
		return []string{x.r.Host}
	}
	return x.header(kind).Values(trailerKey(kind, name))
}

// headerOverhead is what a header value costs the host beyond its bytes
// (its place in the map's slice, which append may double), so that a
// flood of empty values is bounded like one of large ones.
const headerOverhead = 32

// holdHead counts n bytes the guest set on a head against max_buffer.
func (x *exchange) holdHead(n int) {
	x.headerBytes += uint64(n) + headerOverhead
	if x.headerBytes > uint64(x.t.spec.MaxBuffer) {
		panic(&overflow{"the total of headers, methods and URIs set by the guest", http.StatusInternalServerError})
	}
}

// validMethod and validHost refuse what the node's transports refuse to
// send (a method that is no token, a Host that is no host): the proxy
// would count that refusal as the backend failing.
func validMethod(m string) bool { return m != "" && httpguts.ValidHeaderFieldName(m) }

func validHost(h string) bool { return httpguts.ValidHostHeader(h) }

// validField tells whether a guest may set name to value in a head of
// kind: a valid field, a Host that is a host, and in trailers only a field
// a trailer may be (RFC 9110, 6.5.1). net/http's transports refuse a
// request whose trailers name Content-Length, Transfer-Encoding or
// Trailer, which the proxy would count as the backend failing, and a
// framing or routing field in a response's trailers is one an
// intermediary merging them would take for the head's. The response's
// framing is the host's: a guest's Content-Length went out beside the
// backend's, which the proxy adds, and a Transfer-Encoding beside
// net/http's chunked.
func validField(kind uint32, name, value string) bool {
	switch {
	case !validHeader(name, value):
		return false
	case kind == kindRequestTrailers || kind == kindResponseTrailers:
		return httpguts.ValidTrailerHeader(name)
	case kind == kindResponse:
		return !strings.EqualFold(name, "Content-Length") && !strings.EqualFold(name, "Transfer-Encoding")
	case isHost(kind, name):
		return validHost(value)
	}
	return true
}

func (x *exchange) setHeader(kind uint32, name, value string, add bool) {
	if kind == kindRequest || kind == kindRequestTrailers {
		x.mustBeforeNext("changing the request")
	}
	x.holdHead(len(name) + len(value))
	if isHost(kind, name) {
		x.r.Host = value
		return
	}
	h := x.header(kind)
	if add {
		h.Add(trailerKey(kind, name), value)
	} else {
		h.Set(trailerKey(kind, name), value)
	}
}

func (x *exchange) removeHeader(kind uint32, name string) {
	if kind == kindRequest || kind == kindRequestTrailers {
		x.mustBeforeNext("changing the request")
	}
	if isHost(kind, name) {
		x.r.Host = ""
		return
	}
	x.header(kind).Del(trailerKey(kind, name))
}

func (x *exchange) readBody(kind uint32, dst []byte) (n int, eof bool) {
	switch kind {
	case kindRequest:
		x.mustBeforeNext("reading the request body")
		if x.bodyEOF || x.origBody == nil {
			return 0, true
		}
		x.inst.ctx.blockingIO(x.root, false, func() {
			for n == 0 && !eof {
				var err error
				n, err = x.origBody.Read(dst)
				// A client that aborts its upload ends the body; the
				// request is lost anyway and the instance is fine.
				eof = err != nil
			}
		})
		if x.features&FeatureBufferRequest != 0 {
			x.hold(&x.kept, dst[:n], "buffered request body", http.StatusRequestEntityTooLarge)
		}
		x.bodyEOF = eof
		return n, eof
	case kindResponse:
		if x.buf == nil {
			fail("reading the response body needs buffer_response, enabled before next")
		}
		rest := x.buf.body.Bytes()[x.respRead:]
		n = copy(dst, rest)
		x.respRead += n
		return n, n == len(rest)
	}
	fail("unknown body kind %d", kind)
	return 0, false
}

func (x *exchange) writeBody(kind uint32, p []byte) {
	switch kind {
	case kindRequest:
		x.mustBeforeNext("writing the request body")
		if x.newBody == nil {
			x.newBody = &bytes.Buffer{}
		}
		x.hold(x.newBody, p, "request body written by the guest", http.StatusRequestEntityTooLarge)
	case kindResponse:
		switch {
		case !x.afterNext:
			x.hold(&x.ownBody, p, "response written by the guest", http.StatusBadGateway)
		case x.buf != nil:
			if !x.respWritten { // the first write replaces the downstream body
				x.buf.body.Reset()
				x.respWritten = true
			}
			x.hold(&x.buf.body, p, "response body written by the guest", http.StatusBadGateway)
		default: // unbuffered: the response is already on its way
			x.inst.ctx.blockingIO(x.root, true, func() { x.w.Write(p) })
		}
	default:
		fail("unknown body kind %d", kind)
	}
}

func (x *exchange) statusCode() int {
	switch {
	case !x.afterNext:
		if x.status == 0 {
			return http.StatusOK
		}
		return x.status
	case x.buf != nil:
		if x.buf.status == 0 {
			return http.StatusOK
		}
		return x.buf.status
	}
	fail("reading the status code after next needs buffer_response")
	return 0
}

func (x *exchange) setStatusCode(code int) {
	switch {
	case !x.afterNext:
		x.status = code
	case x.buf != nil:
		x.buf.status = code
	}
	// Unbuffered after next, the status has already been sent.
}

// prepareNext hands the request downstream: the rewritten or replayed body
// and, with buffer_response, a writer that holds the response back.
func (x *exchange) prepareNext() http.ResponseWriter {
	x.afterNext = true
	switch {
	case x.newBody != nil:
		n := x.newBody.Len()
		x.r.Body = io.NopCloser(x.newBody)
		x.r.ContentLength = int64(n)
		x.r.Header.Set("Content-Length", strconv.Itoa(n))
	case x.kept.Len() > 0:
		replay := bytes.NewReader(bytes.Clone(x.kept.Bytes()))
		if x.bodyEOF {
			x.r.Body = io.NopCloser(replay)
		} else {
			x.r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(replay, x.origBody), x.origBody}
		}
	}
	var w http.ResponseWriter = x.w
	if x.features&FeatureBufferResponse != 0 {
		x.buf = &bufferedWriter{header: x.w.Header(), out: x.w, root: x.root, limit: uint64(x.t.spec.MaxBuffer)}
		w = x.buf
	}
	// A status or body the guest set before calling next goes out first,
	// as in the reference host.
	if x.status != 0 {
		w.WriteHeader(x.status)
	}
	if x.ownBody.Len() > 0 {
		w.Write(x.ownBody.Bytes())
	}
	return w
}

// answer writes the guest's own response.
func (x *exchange) answer() {
	status := x.status
	if status == 0 {
		status = http.StatusOK
	}
	x.w.WriteHeader(status)
	if x.ownBody.Len() > 0 {
		x.w.Write(x.ownBody.Bytes())
	}
}

// bufferedWriter holds a downstream response until the guest has seen it,
// up to limit bytes. It shares the header map of out, the writer it will
// flush to; interim 1xx heads go to out at once.
type bufferedWriter struct {
	header http.Header
	out    http.ResponseWriter
	root   http.ResponseWriter // the server's, for blockingIO downstream
	status int
	body   bytes.Buffer
	limit  uint64
	// overflowed is set once downstream wrote past limit; the body is
	// dropped and every later write fails.
	overflowed bool
}

// interim tells a 1xx head (103 Early Hints, 100 Continue), which a
// response may have several of before its own, from the response's head.
func interim(code int) bool {
	return code >= 100 && code < 200 && code != http.StatusSwitchingProtocols
}

var errResponseTooLarge = errors.New("response is larger than the transform's max_buffer")

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(code int) {
	if interim(code) {
		b.out.WriteHeader(code)
		return
	}
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	if b.overflowed || uint64(b.body.Len())+uint64(len(p)) > b.limit {
		b.overflowed = true
		b.body = bytes.Buffer{}
		return 0, errResponseTooLarge
	}
	return b.body.Write(p)
}

// Flush is a no-op: a held response is sent whole, after the guest.
func (b *bufferedWriter) Flush() {}

func (b *bufferedWriter) flushTo(w http.ResponseWriter, rewritten bool) {
	status := b.status
	if status == 0 {
		status = http.StatusOK
	}
	// The held body is whole, so its length is known: a guest may have
	// replaced it, or written its own before next while a proxied upstream
	// declared another length.
	if rewritten || b.body.Len() > 0 {
		w.Header().Set("Content-Length", strconv.Itoa(b.body.Len()))
	}
	w.WriteHeader(status)
	if b.body.Len() > 0 {
		w.Write(b.body.Bytes())
	}
}
