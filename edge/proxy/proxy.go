// Package proxy streams requests to a service's backends: it sets the
// forwarding headers, picks a backend per attempt, retries failed connects
// within the service's budget, and turns upstream failures into the node's
// JSON errors (502, 503, 504, 413).
package proxy

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"

	"perigee/edge/exchange"
	"perigee/edge/h1client"
	"perigee/edge/upstream"
	"perigee/units"
	"perigee/via"
)

// Proxy owns the pooled upstream connections shared by every service.
type Proxy struct {
	transport *h1client.Transport // http:// backends; the rest go to std
	std       *http.Transport     // https backends, upgrades, health checks
	h2        h2Transports        // services whose protocol is h2c or h2
	via       string
	log       *slog.Logger
}

// Timeouts bound the proxy's side of a request. The Stream ones a route
// may set for itself (a route's zero fields take the node's).
type Timeouts struct {
	Connect units.Duration `yaml:"connect" json:"connect"`
	Idle    units.Duration `yaml:"idle" json:"idle"` // the listeners' keep-alive
	// UpstreamIdle is how long a pooled backend connection may sit unused.
	// It stays under the usual backend keep-alive (Node.js and Apache close
	// at 5 s), so the node closes first and seldom finds a connection the
	// backend has just closed.
	UpstreamIdle units.Duration `yaml:"upstream_idle" json:"upstream_idle"`
	Stream       `yaml:",inline" json:",inline"`
}

// Stream bounds each wait of one request once it is routed: for the
// response head, and between two reads or writes of a body. None bounds the
// whole exchange, so a long stream that keeps moving is never cut.
type Stream struct {
	ResponseHeader units.Duration `yaml:"response_header" json:"response_header,omitempty"`
	ClientBody     units.Duration `yaml:"client_body" json:"client_body,omitempty"`       // between reads of the client's request body: 408
	UpstreamRead   units.Duration `yaml:"upstream_read" json:"upstream_read,omitempty"`   // between reads of the backend's response: 504, or a cut stream
	UpstreamWrite  units.Duration `yaml:"upstream_write" json:"upstream_write,omitempty"` // between writes of the request to the backend: 504
	// TunnelIdle closes an upgraded connection (a WebSocket) in which
	// neither side has sent anything for so long, and frees its backend.
	TunnelIdle units.Duration `yaml:"tunnel_idle" json:"tunnel_idle,omitempty"`
}

// SetDefaults fills what the config leaves out.
func (t *Timeouts) SetDefaults() {
	for _, d := range []struct {
		v   *units.Duration
		def time.Duration
	}{
		{&t.Connect, 2 * time.Second}, {&t.Idle, 90 * time.Second}, {&t.UpstreamIdle, 4 * time.Second}, {&t.ResponseHeader, 30 * time.Second},
		{&t.ClientBody, 30 * time.Second}, {&t.UpstreamRead, 60 * time.Second}, {&t.UpstreamWrite, 60 * time.Second},
		{&t.TunnelIdle, 5 * time.Minute},
	} {
		if *d.v == 0 {
			*d.v = units.Duration(d.def)
		}
	}
}

// Over is s with its zero fields taken from node.
func (s Stream) Over(node Stream) Stream {
	return Stream{
		ResponseHeader: cmp.Or(s.ResponseHeader, node.ResponseHeader),
		ClientBody:     cmp.Or(s.ClientBody, node.ClientBody),
		UpstreamRead:   cmp.Or(s.UpstreamRead, node.UpstreamRead),
		UpstreamWrite:  cmp.Or(s.UpstreamWrite, node.UpstreamWrite),
		TunnelIdle:     cmp.Or(s.TunnelIdle, node.TunnelIdle),
	}
}

// New builds a proxy with the node's timeouts. Plain-HTTP backends get a
// synchronous HTTP/1.1 client (no goroutines per connection, about a tenth
// less CPU per request); the standard transport serves the rest.
// maxUpstreamHead bounds a backend's response head, interim 1xx heads and
// trailers included, on every upstream protocol: about what Envoy allows
// (60 KiB) and far above what nginx does (4–8 KiB).
const maxUpstreamHead = 64 << 10

func New(t Timeouts, nodeID string, log *slog.Logger) *Proxy {
	dialer := &net.Dialer{Timeout: t.Connect.D(), KeepAlive: 30 * time.Second}
	std := &http.Transport{
		DialContext:            dialer.DialContext,
		MaxIdleConns:           4096,
		MaxIdleConnsPerHost:    512,
		IdleConnTimeout:        t.UpstreamIdle.D(),
		ResponseHeaderTimeout:  t.ResponseHeader.D(),
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxUpstreamHead,
		// Compression is the client's business: pass bodies through as they are.
		DisableCompression: true,
	}
	h1 := h1client.New(h1client.Options{
		ConnectTimeout: t.Connect.D(), ResponseHeaderTimeout: t.ResponseHeader.D(),
		ReadTimeout: t.UpstreamRead.D(), WriteTimeout: t.UpstreamWrite.D(),
		IdleTimeout: t.UpstreamIdle.D(), MaxIdlePerHost: 512,
		MaxResponseHeaderBytes: maxUpstreamHead,
	}, std)
	return &Proxy{transport: h1, std: std, h2: newH2Transports(t, dialer), via: nodeID, log: log}
}

// Client is an HTTP client over the proxy's pool for a service's protocol
// (upstream.HTTP1, H2C or H2), for health checks.
func (p *Proxy) Client(protocol string) *http.Client {
	if rt := p.h2.of(protocol); rt != nil {
		return &http.Client{Transport: rt}
	}
	return &http.Client{Transport: p.std}
}

// Close drops idle upstream connections.
func (p *Proxy) Close() {
	p.transport.CloseIdleConnections()
	p.h2.closeIdle()
}

// Handler serves requests from svc's backends within a route's timeouts
// (tm, with the node's filled in), over every upstream protocol: h1client
// keeps them for plain-HTTP backends, timedStream (h2.go) for HTTP/2
// services and https backends over HTTP/1.1.
func (p *Proxy) Handler(svc *upstream.Service, tm Stream) http.Handler {
	route := h1client.Timeouts{ResponseHeader: tm.ResponseHeader.D(), Read: tm.UpstreamRead.D(), Write: tm.UpstreamWrite.D()}
	var base http.RoundTripper = tlsTimed{plain: p.transport.Route(route), tls: &timedStream{rt: p.std, tm: route}}
	if rt := p.h2.of(svc.Protocol()); rt != nil {
		base = &timedStream{rt: rt, tm: route}
	}
	return guard{via: p.via, next: &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      &balancing{svc: svc, base: base},
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.fail,
		BufferPool:     buffers{},
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}}
}

// tlsTimed sends an HTTP/1.1 service's https requests through tls, which
// keeps the route's timeouts over the standard transport, and the rest
// through plain. An upgrade (a WebSocket) goes through plain, whose
// fallback is that transport too: its body is the tunnel, which
// tunnel_idle bounds and no read timeout may cut.
type tlsTimed struct{ plain, tls http.RoundTripper }

func (t tlsTimed) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "https" && !httpguts.HeaderValuesContainsToken(req.Header["Connection"], "upgrade") {
		return t.tls.RoundTrip(req)
	}
	return t.plain.RoundTrip(req)
}

// guard refuses what must not reach ReverseProxy.
type guard struct {
	via  string // this node's received-by in Via
	next http.Handler
}

func (g guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A backend that is the node itself (a config slip, a discovery answer
	// naming one of its addresses, two nodes steering to each other) would
	// turn one request into hops through the node until the service's
	// max_requests ran out, for everyone.
	if via.PassedThrough(r.Header, g.via) {
		exchange.Error(w, r, http.StatusLoopDetected, "request loop: the request has passed through this node already")
		return
	}
	websocketOnly(r.Header)
	if r.ProtoMajor == 1 && r.Body != nil && r.Body != http.NoBody {
		// Else net/http, before it writes the answer's head, reads what is
		// left of the body, waiting behind the read the transport has
		// pending on it: a backend's early answer (413, 401) to a client
		// that paused its upload waited for client_body.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	g.next.ServeHTTP(w, r)
}

// websocketOnly lets WebSocket be the one protocol a client may switch
// to. Any other upgrade leaves the backend's end of the tunnel in the
// client's hands: after a switch to h2c, say, the client's next requests
// go to the backend past the node's routes and transforms. The request
// goes on without its Upgrade, as an ordinary one, and a backend that
// switches unasked gets a 502 (ReverseProxy refuses a switch nobody asked
// for).
func websocketOnly(h http.Header) {
	if up, ok := h["Upgrade"]; ok && (len(up) != 1 || !strings.EqualFold(strings.TrimSpace(up[0]), "websocket")) {
		delete(h, "Upgrade")
	}
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	in, out := pr.In, pr.Out
	// Append to the X-Forwarded-For that reached the node's handler: a
	// trusted proxy's chain, which geo.Client.Forward kept; a client's own it
	// dropped (geo.trusted_proxies).
	if prior, ok := in.Header["X-Forwarded-For"]; ok {
		out.Header["X-Forwarded-For"] = append([]string(nil), prior...)
	}
	pr.SetXForwarded()
	// A trusted proxy's word on how and where its client connected (a
	// balancer that terminated TLS in front of the plain listener) outranks
	// the node's view of its own hop; a client's never gets this far.
	for _, k := range [...]string{"X-Forwarded-Proto", "X-Forwarded-Host"} {
		if prior, ok := in.Header[k]; ok {
			out.Header[k] = append([]string(nil), prior...)
		}
	}
	out.Header.Add("Via", via.Hop(in.ProtoMajor, in.ProtoMinor, p.via))
	// The query goes as the client sent it (the node checked its bytes):
	// ReverseProxy's re-encoding would drop what it cannot parse.
	out.URL.RawQuery = in.URL.RawQuery
	out.URL.Scheme = "http" // the balancer sets the real scheme and host per attempt
	forwardTrailers(in, out)
	// The node's server answers Expect: 100-continue itself when the body
	// is first read (net/http refuses any other expectation with 417).
	// Passed on, the backend's 100 was relayed too: two to the client
	// whenever it came after the transport's wait.
	out.Header.Del("Expect")
	if x := exchange.From(in.Context()); x != nil {
		// Usually there already, from the node's handler: set again only
		// what a transform changed.
		if v := out.Header["X-Request-Id"]; len(v) != 1 || v[0] != x.ID {
			out.Header.Set("X-Request-Id", x.ID)
		}
		if v, tp := out.Header["Traceparent"], x.Trace.Header(); len(v) != 1 || v[0] != tp {
			out.Header.Set("Traceparent", tp)
		}
	}
}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	resp.Header.Add("Via", via.Hop(resp.Request.ProtoMajor, resp.Request.ProtoMinor, p.via))
	return nil
}

// fail maps what went wrong to the status the client sees.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := classify(r, err)
	if x := exchange.From(r.Context()); x != nil {
		x.Status, x.Error = status, err.Error()
	}
	if status == statusClientGone {
		return // nobody is listening
	}
	p.log.Debug("proxy error", "status", status, "path", r.URL.Path, "err", err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	if r.ProtoMajor == 1 && isClientBodyError(err) {
		// The body's framing is lost: what follows on the connection is
		// no request. (Full duplex, net/http no longer sees it failed.)
		w.Header().Set("Connection", "close")
	}
	exchange.Error(w, r, status, msg)
}

// isClientBodyError reports whether err is the client's request body
// failing to read: malformed, too slow or too large.
func isClientBodyError(err error) bool {
	var body *ClientBodyError
	var tooBig *http.MaxBytesError
	return errors.As(err, &body) || errors.As(err, &tooBig)
}

// statusClientGone is nginx's 499: the client left before the answer.
const statusClientGone = 499

func classify(r *http.Request, err error) (int, string) {
	var tooBig *http.MaxBytesError
	var netErr net.Error
	var body *ClientBodyError
	switch {
	case errors.Is(err, upstream.ErrNoHealthy):
		return http.StatusServiceUnavailable, "no healthy backend"
	case errors.As(err, new(*upstream.OverflowError)):
		return http.StatusServiceUnavailable, "service overloaded"
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, "request body too large"
	// Before the context: net/http cancels it when a body read fails.
	case errors.As(err, &body) && errors.As(body.Err, &netErr) && netErr.Timeout():
		return http.StatusRequestTimeout, "request body too slow"
	case errors.As(err, &body) && body.Err != io.ErrUnexpectedEOF:
		return http.StatusBadRequest, "malformed request body"
	case r.Context().Err() == context.Canceled:
		return statusClientGone, "client closed request"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return http.StatusGatewayTimeout, "upstream timed out"
	default:
		return http.StatusBadGateway, "upstream failed"
	}
}

// balancing is the RoundTripper that chooses a backend for each attempt.
type balancing struct {
	svc  *upstream.Service
	base http.RoundTripper // with the route's timeouts
}

func (t *balancing) RoundTrip(req *http.Request) (*http.Response, error) {
	x := exchange.From(req.Context())
	t.svc.Attempt()
	// A request body that fails to read is the client's fault (it left, or
	// sent too much), not the backend's: watch for it.
	var body *clientBody
	cancel := func() {}
	if req.Body != nil && req.Body != http.NoBody {
		// A body that fails to read ends the attempt at once: the backend
		// would wait for the rest, holding the connection. The context
		// lives until the response body is closed, which it also reads.
		var ctx context.Context
		ctx, cancel = context.WithCancel(req.Context())
		req = req.WithContext(ctx)
		body = &clientBody{ReadCloser: req.Body, fail: cancel}
		req.Body = body
	}
	var skip *upstream.Backend
	for attempt := 0; ; attempt++ {
		lease, err := t.svc.Acquire(req, skip, attempt > 0)
		if err != nil {
			cancel()
			return nil, err
		}
		b := lease.Backend
		req.URL.Scheme, req.URL.Host = b.URL.Scheme, b.Addr
		start := time.Now()
		resp, err := t.base.RoundTrip(req)
		if x != nil {
			x.UpstreamTime += time.Since(start)
			x.Backend = b.Addr
		}
		if err != nil {
			lease.End()
			if x != nil {
				x.UpstreamError = ErrorClass(err)
			}
			clientsFault := req.Context().Err() != nil || (body != nil && body.failed() != nil)
			t.svc.Done(b, time.Since(start), !clientsFault)
			if body != nil && body.failed() != nil {
				cancel()
				if x != nil {
					x.UpstreamError = "" // the client's fault, not the backend's
				}
				return nil, &ClientBodyError{body.failed()}
			}
			if isConnectFailure(err) && attempt < t.svc.MaxRetries() && idempotent(req.Method) && (body == nil || body.reopen()) && t.svc.RetryAllowed() {
				skip = b
				if x != nil {
					x.Retries++
				}
				continue
			}
			cancel()
			return nil, err
		}
		if body != nil && body.failed() != nil {
			// An answer to a request cut short is not the client's answer.
			resp.Body.Close()
			lease.End()
			cancel()
			t.svc.Done(b, time.Since(start), false)
			return nil, &ClientBodyError{body.failed()}
		}
		if x != nil {
			x.UpstreamError = ""
		}
		v := verdict{svc: t.svc, backend: b, took: time.Since(start)}
		if resp.StatusCode >= 500 {
			v.judge(true) // failed already, whatever its body
		}
		resp.Body = releasing(resp.Body, lease, cancel, x, v)
		return resp, nil
	}
}

// clientBody notes why reading the client's request body failed, and
// then calls fail. The transport may read it on its own goroutine.
type clientBody struct {
	io.ReadCloser
	fail   func()
	mu     sync.Mutex
	err    error
	read   bool // a Read began: the body cannot be offered again
	closed bool // Close was called since the body was last offered
}

var errBodyClosed = errors.New("proxy: read on closed request body")

func (b *clientBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, errBodyClosed
	}
	b.read = true
	b.mu.Unlock()
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
		b.fail()
	}
	return n, err
}

// Close closes the client's body once an attempt has read from it. One
// that none has read stays open, so that an attempt that never reached a
// backend (a failed dial closes the body it did not send) can hand it
// whole to the next; the server closes it when the request ends.
func (b *clientBody) Close() error {
	b.mu.Lock()
	b.closed = true
	read := b.read
	b.mu.Unlock()
	if read {
		return b.ReadCloser.Close()
	}
	return nil
}

// reopen readies a body no attempt has read for the next, and reports
// whether it could.
func (b *clientBody) reopen() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.read {
		return false
	}
	b.closed = false
	return true
}

func (b *clientBody) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// ClientBodyError is a request that failed because its body could not be
// read: malformed (400), too slow (408) or too large (413), never the
// backend's fault.
type ClientBodyError struct{ Err error }

func (e *ClientBodyError) Error() string { return "reading the request body: " + e.Err.Error() }
func (e *ClientBodyError) Unwrap() error { return e.Err }

// ErrorClass names why talking to a backend failed, for the access log:
// connect_refused, connect_timeout, connect (another dial failure), reset
// (the backend dropped the connection), timeout (it fell silent past a
// timeout), eof (it closed mid-response), no_healthy, canceled (the client
// left), or protocol (it sent what is not HTTP).
func ErrorClass(err error) string {
	var op *net.OpError
	var netErr net.Error
	dial := errors.As(err, &op) && op.Op == "dial"
	switch {
	case errors.Is(err, upstream.ErrNoHealthy):
		return "no_healthy"
	case dial && errors.Is(err, syscall.ECONNREFUSED):
		return "connect_refused"
	case dial && errors.As(err, &netErr) && netErr.Timeout():
		return "connect_timeout"
	case dial:
		return "connect"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "protocol"
}

// isConnectFailure is true when the request never reached the backend, so a
// retry cannot run it twice.
func isConnectFailure(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// idempotent methods may be sent again after a connect failure, with
// their body if no attempt read it (a failed dial reads nothing).
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// releasing ends the attempt (its lease on in-flight counts and breaker
// slots, and its context) when the body is closed, and notes in x why
// reading it failed. A 101 Switching Protocols body is read-write (a
// WebSocket), and keeps being. The attempt is held in the body's wrapper
// itself rather than in a closure: one allocation an attempt, not three.
func releasing(body io.ReadCloser, lease upstream.Lease, cancel context.CancelFunc, x *exchange.Exchange, v verdict) io.ReadCloser {
	if rw, ok := body.(io.ReadWriteCloser); ok {
		// An upgraded stream is copied on goroutines that may outlive the
		// request and its pooled record: it notes nothing there. The
		// switch is the answer: the tunnel's end is no verdict on it.
		v.judge(false)
		return &releaseRW{releaseBody: releaseBody{ReadCloser: body, lease: lease, cancel: cancel}, w: rw}
	}
	return &releaseBody{ReadCloser: body, lease: lease, cancel: cancel, x: x, verdict: v}
}

// verdict is an answer's outcome for its backend's passive health, given
// once its body has ended: a backend that sends good heads and then cuts
// every body is failing, however its heads look.
type verdict struct {
	svc     *upstream.Service // nil once given
	backend *upstream.Backend
	took    time.Duration // to the response head
}

func (v *verdict) judge(failed bool) {
	if v.svc != nil {
		v.svc.Done(v.backend, v.took, failed)
		v.svc = nil
	}
}

type releaseBody struct {
	io.ReadCloser
	lease   upstream.Lease
	cancel  context.CancelFunc // the attempt's context
	x       *exchange.Exchange
	verdict verdict
	cut     atomic.Bool // a read failed, and not for the client's sake
	ended   atomic.Bool
}

func (r *releaseBody) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		if r.x != nil {
			r.x.UpstreamError = ErrorClass(err)
		}
		// Not the request's context: the client left, or its own
		// deadline (a gRPC timeout) passed.
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			r.cut.Store(true)
		}
	}
	return n, err
}

func (r *releaseBody) Close() error {
	if r.ended.CompareAndSwap(false, true) {
		r.verdict.judge(r.cut.Load())
		r.lease.End()
		r.cancel()
	}
	return r.ReadCloser.Close()
}

type releaseRW struct {
	releaseBody
	w io.Writer
}

func (r *releaseRW) Write(p []byte) (int, error) { return r.w.Write(p) }

// buffers pools the 32 KiB copy buffers of streamed bodies.
type buffers struct{}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (buffers) Get() []byte  { return *(bufPool.Get().(*[]byte)) }
func (buffers) Put(b []byte) { bufPool.Put(&b) }
