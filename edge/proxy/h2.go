package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"perigee/edge/h1client"
	"perigee/edge/upstream"
	"perigee/geo"
)

// h2Transports speak HTTP/2 to the services that ask for it: h2c with prior
// knowledge (gRPC servers) and h2 over TLS by ALPN. Each keeps one
// multiplexed connection per backend, pinged when it falls silent so a dead
// one is noticed before a request waits on it.
type h2Transports struct {
	clear, tls *http2.Transport
}

func newH2Transports(t Timeouts, dialer *net.Dialer) h2Transports {
	base := func() *http2.Transport {
		return &http2.Transport{
			DisableCompression: true, // the client's business, as on HTTP/1.1
			IdleConnTimeout:    t.UpstreamIdle.D(),
			ReadIdleTimeout:    15 * time.Second,
			PingTimeout:        5 * time.Second,
			WriteByteTimeout:   t.UpstreamWrite.D(),
			MaxHeaderListSize:  maxUpstreamHead,
		}
	}
	clear := base()
	clear.AllowHTTP = true
	clear.DialTLSContext = func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return dialer.DialContext(ctx, network, addr)
	}
	secure := base()
	secure.DialTLSContext = func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
		// The dialer's timeout bounds the handshake too.
		c, err := (&tls.Dialer{NetDialer: dialer, Config: cfg}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if p := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
			c.Close()
			return nil, fmt.Errorf("backend %s did not negotiate h2 by ALPN (got %q)", addr, p)
		}
		return c, nil
	}
	return h2Transports{clear: clear, tls: secure}
}

// of is the transport of an HTTP/2 protocol, nil for HTTP/1.1.
func (h h2Transports) of(protocol string) *http2.Transport {
	switch protocol {
	case upstream.H2C:
		return h.clear
	case upstream.H2:
		return h.tls
	}
	return nil
}

func (h h2Transports) closeIdle() {
	h.clear.CloseIdleConnections()
	h.tls.CloseIdleConnections()
}

// timedStream is one route's round trips over a transport that keeps none
// of its timeouts itself (HTTP/2, and the standard transport of https
// backends over HTTP/1.1), bounded by them as waits, never as a whole: the
// response head within ResponseHeader of the request's end; each hand-over
// of request bytes within Write; and, once the head is in, a wait for
// response bytes within Read of the last movement either way, so that a
// bidirectional stream (gRPC) in which only the client speaks for a while
// is not idle.
type timedStream struct {
	rt http.RoundTripper
	tm h1client.Timeouts
}

// errStreamTimeout is a stream that stalled past one of its timeouts: the
// client gets 504, or a cut stream.
type errStreamTimeout string

func (e errStreamTimeout) Error() string   { return "upstream " + string(e) + " timed out" }
func (e errStreamTimeout) Timeout() bool   { return true }
func (e errStreamTimeout) Temporary() bool { return true }

var _ net.Error = errStreamTimeout("")

func (t *timedStream) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	w := &watch{ctx: ctx, cancel: cancel, tm: t.tm}
	req = req.WithContext(guardInterim(ctx))
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &watchedBody{ReadCloser: req.Body, w: w}
	} else {
		w.sent()
	}
	resp, err := t.rt.RoundTrip(req)
	w.headers()
	if err != nil {
		w.stop()
		cancel(nil)
		return nil, w.cause(err)
	}
	resp.Body = &watchedResponse{ReadCloser: resp.Body, w: w}
	return resp, nil
}

// errInterimTooLarge is a backend's 1xx heads past maxUpstreamHead, and
// errUnaskedSwitch a 101 to a request that asked for no upgrade, which
// the HTTP/2 transport hands over as a 1xx: 502 both.
var (
	errInterimTooLarge = errors.New("upstream 1xx heads too large")
	errUnaskedSwitch   = errors.New("upstream switched protocols unasked")
)

// guardInterim gives the transport, in place of the request's trace
// (ReverseProxy's, which relays each 1xx to the client), a copy whose
// Got1xxResponse refuses a 101 and charges the 1xx heads to
// maxUpstreamHead, each field 32 bytes more than its length as h1client
// charges them, before relaying: the standard and HTTP/2 transports bound
// 1xx heads only while no trace takes them. A trace added on top with
// httptrace.WithClientTrace could refuse nothing: the old hook still runs
// after it, and its error is dropped.
func guardInterim(ctx context.Context) context.Context {
	relay := httptrace.ContextClientTrace(ctx)
	if relay == nil || relay.Got1xxResponse == nil {
		return ctx // the transports bound, and relay, nothing
	}
	guarded := *relay
	left := int64(maxUpstreamHead)
	guarded.Got1xxResponse = func(code int, h textproto.MIMEHeader) error {
		if code == http.StatusSwitchingProtocols {
			return errUnaskedSwitch
		}
		for k, vv := range h {
			for _, v := range vv {
				left -= int64(len(k) + len(v) + 32)
			}
		}
		if left < 0 {
			return errInterimTooLarge
		}
		return relay.Got1xxResponse(code, h)
	}
	return traceCtx{ctx, &guarded}
}

// traceCtx is a context whose client trace is replaced: httptrace's key is
// unexported, but the value under it is the one *httptrace.ClientTrace.
type traceCtx struct {
	context.Context
	trace *httptrace.ClientTrace
}

func (c traceCtx) Value(key any) any {
	v := c.Context.Value(key)
	if _, ok := v.(*httptrace.ClientTrace); ok {
		return c.trace
	}
	return v
}

// watch holds a stream's timers. A timer that fires cancels the stream's
// context, which makes the transport reset the stream.
type watch struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	tm     h1client.Timeouts

	mu          sync.Mutex
	head, write *time.Timer // the response head, a write the transport holds
	read        *time.Timer // a wait for response bytes
	gotHead     bool
	reading     bool
}

func (w *watch) fire(what string) func() {
	return func() { w.cancel(errStreamTimeout(what)) }
}

// arm (re)starts *t for d, unless d is 0 (no bound).
func (w *watch) arm(t **time.Timer, d time.Duration, what string) {
	switch {
	case d <= 0:
	case *t == nil:
		*t = time.AfterFunc(d, w.fire(what))
	default:
		(*t).Reset(d)
	}
}

func disarm(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// sent is the end of the request body: the head is due.
func (w *watch) sent() {
	w.mu.Lock()
	defer w.mu.Unlock()
	disarm(w.write)
	if !w.gotHead {
		w.arm(&w.head, w.tm.ResponseHeader, "response header")
	}
}

func (w *watch) headers() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gotHead = true
	disarm(w.head)
}

// handed is request bytes given to the transport, which must come back for
// more within Write; it is movement for a pending read too.
func (w *watch) handed() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.arm(&w.write, w.tm.Write, "write")
	if w.reading {
		w.arm(&w.read, w.tm.Read, "read")
	}
}

// asking is the transport back for more request bytes: the wait is the
// client's now, which the listener's body timeout bounds.
func (w *watch) asking() {
	w.mu.Lock()
	defer w.mu.Unlock()
	disarm(w.write)
}

func (w *watch) readStart() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reading = true
	w.arm(&w.read, w.tm.Read, "read")
}

func (w *watch) readEnd() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reading = false
	disarm(w.read)
}

func (w *watch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range []*time.Timer{w.head, w.write, w.read} {
		disarm(t)
	}
}

// cause is err, or the timeout that caused it.
func (w *watch) cause(err error) error {
	var to errStreamTimeout
	if errors.As(context.Cause(w.ctx), &to) {
		return to
	}
	return err
}

type watchedBody struct {
	io.ReadCloser
	w *watch
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.w.asking()
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.w.sent()
	case n > 0:
		b.w.handed()
	}
	return n, err
}

type watchedResponse struct {
	io.ReadCloser
	w *watch
}

func (r *watchedResponse) Read(p []byte) (int, error) {
	r.w.readStart()
	n, err := r.ReadCloser.Read(p)
	r.w.readEnd()
	if err != nil && err != io.EOF {
		err = r.w.cause(err)
	}
	return n, err
}

func (r *watchedResponse) Close() error {
	r.w.stop()
	r.w.cancel(nil)
	return r.ReadCloser.Close()
}

// forwardTrailers makes out send the request trailers in declared (the
// listeners accept no others), but for those the node vouches for in the
// header section. Their values arrive only at the body's end, after out was
// cloned from in: they are copied over when the body ends.
func forwardTrailers(in, out *http.Request) {
	if len(in.Trailer) == 0 || out.Body == nil {
		return
	}
	out.Trailer = make(http.Header, len(in.Trailer)) // the names, for the transport to announce
	for k := range in.Trailer {
		if !nodesField(k) {
			out.Trailer[k] = nil
		}
	}
	if len(out.Trailer) == 0 {
		out.Trailer = nil
		return
	}
	out.Body = &trailerBody{ReadCloser: out.Body, in: in, out: out.Trailer}
}

// nodesField reports whether a field named k is one the node sets, or
// drops from a client, in the header section: a backend that merges
// trailers into the headers would take a client's trailer of that name
// for the node's word. Those are the client-address headers
// (geo.NamesClient), OwnField's, TargetOverrides, Via, the request id and
// trace.
func nodesField(k string) bool {
	if geo.NamesClient(k) || OwnField(k) {
		return true
	}
	switch k = http.CanonicalHeaderKey(k); k {
	case "Via", "X-Request-Id", "Traceparent", "Tracestate", geo.SteeredHeader:
		return true
	}
	return slices.Contains(TargetOverrides[:], k)
}

// TargetOverrides are the fields backends read as the request's path (IIS
// URL Rewrite, Laminas, older Symfony), in canonical form: a client's
// would have the node route one path and the backend serve another, past
// the routes and transforms that guard it. The node drops a client's; a
// transform may set them.
var TargetOverrides = [...]string{"X-Original-Url", "X-Rewrite-Url", "X-Original-Uri"}

// OwnField reports whether a field named k is the node's own, which no
// client may send: X-Perigee-*, and any name with a '_', which CGI and
// WSGI backends read as the '-' spelling (X_Perigee_Country, X_Request_Id).
func OwnField(k string) bool {
	const own = "X-Perigee-"
	return len(k) >= len(own) && strings.EqualFold(k[:len(own)], own) || strings.IndexByte(k, '_') >= 0
}

type trailerBody struct {
	io.ReadCloser
	in  *http.Request
	out http.Header
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		for k := range b.out {
			b.out[k] = b.in.Trailer[k]
		}
	}
	return n, err
}
