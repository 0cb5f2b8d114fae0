package wasm

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// proxyState is one request's proxy-wasm side: its context and what the
// callbacks have decided.
type proxyState struct {
	id uint32
	// effective is the context host functions act for: the callback's own,
	// or another the guest chose with proxy_set_effective_context.
	effective uint32
	status    int  // the response status, as the guest sees and sets it
	sent      bool // the response headers went to the client
	local     *localResponse
	err       error // the first failed callback run from inside the chain
	spent     time.Duration
	// body is the body bytes the running body callback sees, of bodyKind.
	body     *[]byte
	bodyKind uint32
	// Dispatched calls: outstanding, and the one whose callback runs.
	calls    []*httpCall
	call     *httpCall
	nextCall uint32 // the last call's id: the calls dispatched so far
	resumed  bool   // proxy_continue_stream since the last pause
	// offStream is set while a request body callback runs on the
	// transport's goroutine: the response's maps are off limits then.
	offStream bool
	// writer runs the response callbacks; here to spare an allocation.
	writer proxyWriter
}

// errStopped is what the body reader and writer return once a callback
// answered locally or failed: the rest of the chain stops there.
var errStopped = errors.New("proxy-wasm filter stopped the stream")

// proxyLayer runs one proxy-wasm filter around the rest of the chain, with
// Envoy's order of callbacks: proxy_on_context_create, request headers,
// request body (chunk by chunk), request trailers; response headers,
// response body, response trailers; then proxy_on_done, proxy_on_log and
// proxy_on_delete.
type proxyLayer struct {
	t    *Transform
	next http.Handler
}

func (l *proxyLayer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := l.t
	x := t.begin(w, r)
	if x == nil {
		return
	}
	defer x.free()
	inst := x.inst
	g := inst.proxy
	g.nextID++
	if g.nextID == g.rootID {
		g.nextID++
	}
	x.pwState = proxyState{id: g.nextID, effective: g.nextID}
	x.pw = &x.pwState
	id := uint64(x.pw.id)

	if _, err := x.callback(g.contextCreate, id, uint64(g.rootID)); err != nil {
		l.fail(x, err, "proxy_on_context_create")
		return
	}
	err := l.serve(x, g)
	if err == nil {
		// Calls still outstanding are answered before the context ends.
		err = x.deliverCalls(g, false)
	}
	if err != nil {
		l.fail(x, err, "http stream")
		return
	}
	for _, fn := range []api.Function{g.done, g.log, g.delete} {
		if _, err := x.callback(fn, id); err != nil {
			l.fail(x, err, "context end")
			return
		}
	}
	t.stats.time.Observe(x.pw.spent)
	t.put(inst)
}

// serve runs the stream's callbacks and the rest of the chain; an error is
// a callback that failed.
func (l *proxyLayer) serve(x *exchange, g *proxyGuest) error {
	r := x.r
	// HTTP/2 and HTTP/3 servers give a request that ended with its
	// headers a body to read nonetheless, of length 0.
	eos := r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
	action, err := x.headersCallback(g.requestHeaders, kindRequest, eos)
	if err != nil {
		return err
	}
	if x.pw.local != nil {
		l.answerLocal(x)
		return nil
	}
	if action == actionPause && len(x.pw.calls) > 0 {
		// Paused for a dispatched call (an auth check): its callback
		// resumes the request or answers it.
		if err := x.deliverCalls(g, true); err != nil {
			return err
		}
		if x.pw.local != nil {
			l.answerLocal(x)
			return nil
		}
		if x.pw.resumed {
			action = actionContinue
		}
	}
	var body *proxyBody
	if !eos && g.requestBody != nil {
		body = &proxyBody{x: x, g: g, src: r.Body}
	}
	if action == actionPause && body != nil {
		// Envoy holds paused headers until a body callback continues; here
		// the body is read (within max_buffer) until one does.
		if err := body.readUntilContinue(); err != nil {
			return x.stopped(err)
		}
		if x.pw.local != nil {
			l.answerLocal(x)
			return nil
		}
		// An HTTP/3 request that ended with its headers shows it only now.
		eos = body.none
		if !eos {
			action = actionContinue
		}
	}
	if action == actionPause {
		// Nothing of the stream can resume it; the root context may.
		resumed, err := x.postpone(g)
		switch {
		case err != nil:
			x.pw.err = err
			return err
		case x.pw.local != nil:
			l.answerLocal(x)
			return nil
		case !resumed:
			l.t.stats.errors.Add(1)
			http.Error(x.w, "request postponed by transform "+l.t.spec.Name+" past its bound", http.StatusGatewayTimeout)
			return nil
		}
	}
	if body != nil {
		r.Body = body
		r.ContentLength = -1
		r.Header.Del("Content-Length")
		body.downstream = true
	}
	x.afterNext = true
	pw := &x.pw.writer
	*pw = proxyWriter{x: x, g: g, w: x.w, body: body}
	l.serveNext(x, pw, body)
	if x.pw.err == nil && x.pw.local == nil {
		pw.finish()
	}
	if x.pw.err != nil {
		return x.stopped(x.pw.err)
	}
	if x.pw.local != nil {
		if x.pw.sent {
			return errors.New("proxy_send_local_response after the response went out")
		}
		l.answerLocal(x)
	}
	return nil
}

// stopped passes on a callback's failure, unless it was only the stream
// stopping for a local response.
func (x *exchange) stopped(err error) error {
	if x.pw.local != nil && errors.Is(err, errStopped) {
		return nil
	}
	return err
}

// serveNext runs the rest of the chain. A panic (net/http's way of aborting
// a response) leaves the instance sound between callbacks, unless the
// filter had stopped the stream, which is what made the chain abort. The
// request body, which the transport may still be reading, is ended first.
func (l *proxyLayer) serveNext(x *exchange, w http.ResponseWriter, body *proxyBody) {
	defer func() {
		body.end()
		if p := recover(); p != nil {
			if x.pw.err != nil || x.pw.local != nil {
				return
			}
			l.t.put(x.inst)
			panic(p)
		}
	}()
	l.next.ServeHTTP(w, x.r)
}

func (l *proxyLayer) answerLocal(x *exchange) {
	l.t.stats.answered.Add(1)
	lr := x.pw.local
	h := x.w.Header()
	clear(h)
	for _, kv := range lr.headers {
		if !strings.HasPrefix(kv[0], ":") && validHeader(strings.ToLower(kv[0]), kv[1]) {
			h.Add(kv[0], kv[1])
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(lr.body)))
	x.w.WriteHeader(lr.status)
	x.w.Write(lr.body)
}

// fail discards the instance after a failed callback and answers 500 (or
// 413/502 past max_buffer) when the response has not gone out.
func (l *proxyLayer) fail(x *exchange, err error, phase string) {
	l.t.discard(x.inst)
	if x.pw.sent {
		l.t.callFailure(err, phase)
		l.t.stats.errors.Add(1)
		return
	}
	if ov := (*overflow)(nil); errors.As(err, &ov) {
		(&layer{t: l.t}).tooLarge(x, ov)
		return
	}
	l.t.callFailure(err, phase)
	l.t.stats.errors.Add(1)
	clear(x.w.Header())
	http.Error(x.w, "transform "+l.t.spec.Name+" failed", http.StatusInternalServerError)
}

func boolArg(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// callback runs one guest callback of the exchange's own context under the
// transform's deadline; a callback the guest does not export continues.
func (x *exchange) callback(fn api.Function, args ...uint64) (uint64, error) {
	return x.callbackAs(x.pw.id, fn, args...)
}

// headersCallback runs proxy_on_request_headers or
// proxy_on_response_headers, with the count of the map's pairs.
func (x *exchange) headersCallback(fn api.Function, kind uint32, eos bool) (uint64, error) {
	if fn == nil {
		return actionContinue, nil
	}
	return x.callback(fn, uint64(x.pw.id), uint64(x.pairCount(kind)), boolArg(eos))
}

// callbackAs runs a callback with the effective context id.
func (x *exchange) callbackAs(id uint32, fn api.Function, args ...uint64) (uint64, error) {
	if fn == nil {
		return actionContinue, nil
	}
	x.pw.effective = id
	n := copy(x.stack[:], args)
	start := time.Now()
	err := x.call(fn, x.stack[:max(n, 1)])
	x.pw.spent += time.Since(start)
	return x.stack[0], err
}

// proxyBody streams the request body through proxy_on_request_body: each
// chunk read joins what the filter holds; Continue releases it upstream,
// Pause keeps it (within max_buffer) for the next call. At the end of the
// stream the held bytes go on either way: nothing is left to resume them.
//
// Once downstream, the body may be read on the transport's goroutine
// (HTTP/2, net/http's), beside the response callbacks, and even after
// the layer returned: ReverseProxy's Close does not stop a Read already
// under way. mu orders its callbacks with the stream's; ended, set when
// the rest of the chain returned, stops them, since x and its instance
// go to other requests then. A callback run there sees no response maps,
// which the chain writes unguarded.
type proxyBody struct {
	mu         sync.Mutex
	ended      bool
	downstream bool

	x       *exchange
	g       *proxyGuest
	src     io.ReadCloser
	held    []byte
	out     []byte
	chunk   []byte
	eof     bool
	stopped error
	// none is set when the stream turned out to have no body at all: no
	// body callback runs for it, as in Envoy.
	none bool
	seen bool
}

const bodyChunk = 32 << 10

func (b *proxyBody) Read(p []byte) (int, error) {
	for len(b.out) == 0 {
		if b.stopped != nil {
			return 0, b.stopped
		}
		if b.eof {
			return 0, io.EOF
		}
		if _, err := b.step(); err != nil {
			b.stopped = err
			return 0, err
		}
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil
}

// readUntilContinue runs the body callback before the request goes
// upstream, for headers that paused; what was read is replayed.
func (b *proxyBody) readUntilContinue() error {
	for !b.eof {
		action, err := b.step()
		if err != nil || action == actionContinue || b.x.pw.local != nil {
			return err
		}
	}
	return nil
}

// step reads one chunk and runs the callback over everything held.
func (b *proxyBody) step() (uint64, error) {
	if b.chunk == nil {
		b.chunk = make([]byte, bodyChunk)
	}
	n, err := b.src.Read(b.chunk)
	if err != nil && err != io.EOF {
		return 0, err // the client went away
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended {
		return 0, errStopped
	}
	x := b.x
	x.pw.offStream = b.downstream
	defer func() { x.pw.offStream = false }()
	b.eof = err == io.EOF
	if n == 0 && b.eof && !b.seen {
		b.none = true
		return actionPause, nil
	}
	b.seen = true
	if uint64(len(b.held))+uint64(n) > uint64(x.t.spec.MaxBuffer) {
		x.pw.err = &overflow{"request body held by the filter", http.StatusRequestEntityTooLarge}
		return 0, x.pw.err
	}
	b.held = append(b.held, b.chunk[:n]...)
	x.pw.body, x.pw.bodyKind = &b.held, bufferRequestBody
	action, cerr := x.callback(b.g.requestBody, uint64(x.pw.id), uint64(len(b.held)), boolArg(b.eof))
	x.pw.body = nil
	switch {
	case cerr != nil:
		x.pw.err = cerr
		return 0, cerr
	case x.pw.local != nil:
		return 0, errStopped
	case action == actionContinue || b.eof:
		b.out = append(b.out, b.held...)
		b.held = b.held[:0]
	}
	if n := len(x.headerNames(kindRequestTrailers)); b.eof && n > 0 {
		if _, err := x.callback(b.g.requestTrailers, uint64(x.pw.id), uint64(n)); err != nil {
			x.pw.err = err
			return 0, err
		}
	}
	return action, nil
}

func (b *proxyBody) Close() error { return b.src.Close() }

// lock and unlock bracket what the stream's goroutine does with x while
// the body is downstream; a nil body has nothing to order.
func (b *proxyBody) lock() {
	if b != nil {
		b.mu.Lock()
	}
}

func (b *proxyBody) unlock() {
	if b != nil {
		b.mu.Unlock()
	}
}

// end stops the body's callbacks, waiting for one under way.
func (b *proxyBody) end() {
	if b != nil {
		b.mu.Lock()
		b.ended = true
		b.mu.Unlock()
	}
}

// proxyWriter runs the response callbacks as the rest of the chain writes
// the response: proxy_on_response_headers before the headers go out, and
// proxy_on_response_body per write, with the same hold-until-Continue as
// the request body. Its callbacks run under the request body's lock; what
// goes to the client goes outside it, so that a client that reads its
// response only once its upload is done still gets its upload read.
type proxyWriter struct {
	x        *exchange
	g        *proxyGuest
	w        http.ResponseWriter
	body     *proxyBody // the request body downstream, or nil
	started  bool       // WriteHeader ran the headers callback
	holdHead bool       // the headers callback paused: headers wait for the body
	held     []byte
}

func (pw *proxyWriter) Header() http.Header { return pw.w.Header() }

func (pw *proxyWriter) broken() bool { return pw.x.pw.err != nil || pw.x.pw.local != nil }

func (pw *proxyWriter) WriteHeader(code int) {
	if interim(code) {
		// proxy-wasm has no callback for them: they pass.
		pw.w.WriteHeader(code)
		return
	}
	pw.body.lock()
	status := pw.head(code)
	pw.body.unlock()
	if status != 0 {
		pw.w.WriteHeader(status)
	}
}

// head runs the headers callback; it returns the status to send now, or 0.
func (pw *proxyWriter) head(code int) int {
	x := pw.x
	if pw.started || pw.broken() {
		return 0
	}
	pw.started = true
	x.pw.status = code
	r := x.r
	eos := r.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified ||
		pw.w.Header().Get("Content-Length") == "0"
	action, err := x.headersCallback(pw.g.responseHeaders, kindResponse, eos)
	if err != nil {
		x.pw.err = err
		return 0
	}
	if action == actionPause && len(x.pw.calls) > 0 {
		// Paused for dispatched calls: their callbacks may change the
		// headers, then resume (or not: nothing else would).
		if err := x.deliverCalls(pw.g, true); err != nil {
			x.pw.err = err
			return 0
		}
		action = actionContinue
	}
	if pw.broken() {
		return 0
	}
	if action == actionPause && pw.g.responseBody != nil && !eos {
		pw.holdHead = true
		return 0
	}
	return pw.headOut()
}

// headOut marks the head sent and returns its status, for the caller to
// write.
func (pw *proxyWriter) headOut() int {
	pw.holdHead = false
	pw.x.pw.sent = true
	if pw.g.responseBody != nil {
		// The filter may change the body's length.
		pw.w.Header().Del("Content-Length")
	}
	return pw.x.pw.status
}

func (pw *proxyWriter) Write(p []byte) (int, error) {
	if !pw.started {
		pw.WriteHeader(http.StatusOK)
	}
	pw.body.lock()
	broken, through := pw.broken(), pw.g.responseBody == nil
	var status int
	var out []byte
	var err error
	if !broken && !through {
		status, out, err = pw.bodyCallback(p, false)
	}
	pw.body.unlock()
	switch {
	case broken:
		return 0, errStopped
	case through:
		return pw.w.Write(p)
	case err != nil:
		return 0, err
	}
	if err := pw.send(status, out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// bodyCallback runs the body callback over the held bytes and p. On
// Continue or at the end of the stream it returns what to send: the head's
// status if the head was held, and the bytes.
func (pw *proxyWriter) bodyCallback(p []byte, eos bool) (status int, out []byte, err error) {
	x := pw.x
	if uint64(len(pw.held))+uint64(len(p)) > uint64(x.t.spec.MaxBuffer) {
		x.pw.err = &overflow{"response body held by the filter", http.StatusBadGateway}
		return 0, nil, x.pw.err
	}
	pw.held = append(pw.held, p...)
	x.pw.body, x.pw.bodyKind = &pw.held, bufferResponseBody
	action, err := x.callback(pw.g.responseBody, uint64(x.pw.id), uint64(len(pw.held)), boolArg(eos))
	x.pw.body = nil
	if err != nil {
		x.pw.err = err
		return 0, nil, err
	}
	if pw.broken() {
		return 0, nil, errStopped
	}
	if action == actionContinue || eos {
		if pw.holdHead {
			status = pw.headOut()
		}
		// held is written before the next append reuses it: both happen
		// on the stream's goroutine.
		out, pw.held = pw.held, pw.held[:0]
	}
	return status, out, nil
}

// send writes what bodyCallback released.
func (pw *proxyWriter) send(status int, out []byte) error {
	if status != 0 {
		pw.w.WriteHeader(status)
	}
	if len(out) > 0 {
		if _, err := pw.w.Write(out); err != nil {
			return err
		}
	}
	return nil
}

// Unwrap lets http.ResponseController reach the connection (its read and
// write deadlines, which bound the rest of the chain).
func (pw *proxyWriter) Unwrap() http.ResponseWriter { return pw.w }

// Flush passes through once nothing is held.
func (pw *proxyWriter) Flush() {
	if pw.x.pw.sent && len(pw.held) == 0 {
		if f, ok := pw.w.(http.Flusher); ok {
			f.Flush()
		}
	}
}

// finish ends the response stream: the last body callback, with
// end_of_stream, and the trailers callback.
func (pw *proxyWriter) finish() {
	if !pw.started {
		pw.WriteHeader(http.StatusOK)
	}
	if pw.broken() {
		return
	}
	if pw.g.responseBody != nil {
		status, out, err := pw.bodyCallback(nil, true)
		if err != nil || pw.send(status, out) != nil {
			return
		}
	} else if pw.holdHead {
		pw.w.WriteHeader(pw.headOut())
	}
	if pw.g.responseTrailers != nil {
		declaredTrailers(pw.w.Header())
		if n := len(pw.x.headerNames(kindResponseTrailers)); n > 0 {
			if _, err := pw.x.callback(pw.g.responseTrailers, uint64(pw.x.pw.id), uint64(n)); err != nil {
				pw.x.pw.err = err
			}
		}
	}
}

// declaredTrailers moves the values of trailers announced in the Trailer
// header under http.TrailerPrefix, where the host keeps the trailers it
// shows and changes; net/http sends both kinds the same way.
func declaredTrailers(h http.Header) {
	for _, line := range h.Values("Trailer") {
		for _, name := range strings.Split(line, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if vs, ok := h[name]; ok && name != "" {
				h[http.TrailerPrefix+name] = vs
				delete(h, name)
			}
		}
	}
}
