// Package h1client is a synchronous HTTP/1.1 http.RoundTripper for
// plain-HTTP backends.
//
// net/http.Transport runs a read and a write goroutine per connection and
// hands every request and response between them over channels; in a proxy
// those handoffs and wake-ups cost a quarter of the CPU. Here the calling
// goroutine writes the request and reads the response itself, on keep-alive
// connections pooled per backend address. Only a request body is written
// by a goroutine of its own while the caller waits for the answer: a
// backend may answer (413, 401) before it has read the body, and then
// read no more of it. That answer is relayed at once, and its connection,
// whose request never went out in full, is closed after it.
//
// Before a pooled connection carries a request, one non-blocking read
// checks that nothing arrived on it while idle: a byte nobody asked for
// (a body after a HEAD, 204 or 304, a stray answer) would be taken for the
// next request's response, and a FIN or RST means the backend closed it.
// Either way it is dropped and the request, of which nothing was sent,
// goes on another. A request whose write failed before any byte left goes
// again too, whatever its method; one that may have reached the backend
// goes again only if it is idempotent.
//
// Options and, per request, WithTimeouts bound the wait for the head, any
// silence of the backend mid-response, and any write it leaves unread.
//
// It reads response heads and writes request heads itself (head.go,
// request.go), with a handful of allocations where net/http takes a dozen
// more, and refuses every head net/http refuses and those it reads in a
// way another parser might not (white space before a colon, a status
// under 100).
//
// Requests it does not handle go to a fallback RoundTripper (normally an
// *http.Transport): other schemes than http, protocol upgrades (WebSocket)
// and requests with a body that expect 100-continue.
package h1client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Options tune a Transport. Zero values take the defaults noted.
type Options struct {
	// ConnectTimeout bounds a dial, which a request that goes meanwhile
	// does not cut: its connection waits in the pool for the next. 0
	// leaves the dial to the request's context.
	ConnectTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response head once the
	// request is written; 0 means no limit but the context.
	ResponseHeaderTimeout time.Duration
	// ReadTimeout bounds each wait for response bytes, head and body: the
	// longest a backend may fall silent mid-response; 0 means no limit.
	ReadTimeout time.Duration
	// WriteTimeout bounds each write of the request: the longest a backend
	// may leave the request unread; 0 means no limit.
	WriteTimeout time.Duration
	// IdleTimeout closes a pooled connection left unused this long; 0 means
	// 4s, below the keep-alive of common backends (Node.js and Apache
	// close at 5s), so that we rather than they end an idle connection.
	IdleTimeout time.Duration
	// MaxIdlePerHost bounds each backend's idle pool; 0 means 64.
	MaxIdlePerHost int
	// MaxResponseHeaderBytes bounds the response head, interim 1xx heads
	// included; 0 means 1 MiB.
	MaxResponseHeaderBytes int64
}

// Timeouts bound one exchange; see Options for each. A Route and a
// request's context (WithTimeouts) may carry their own; zero fields take
// the Transport's.
type Timeouts struct {
	ResponseHeader, Read, Write time.Duration
}

type timeoutsKey struct{}

// WithTimeouts returns ctx carrying timeouts for the requests made with
// it; they take precedence over the Transport's and a Route's.
func WithTimeouts(ctx context.Context, tm Timeouts) context.Context {
	return context.WithValue(ctx, timeoutsKey{}, tm)
}

// timeouts are the Transport's, overridden by route's, then by the
// context's.
func (t *Transport) timeouts(ctx context.Context, route Timeouts) Timeouts {
	tm := route.over(Timeouts{t.opts.ResponseHeaderTimeout, t.opts.ReadTimeout, t.opts.WriteTimeout})
	if o, ok := ctx.Value(timeoutsKey{}).(Timeouts); ok {
		tm = o.over(tm)
	}
	return tm
}

// over is tm with its zero fields taken from base.
func (tm Timeouts) over(base Timeouts) Timeouts {
	return Timeouts{cmp.Or(tm.ResponseHeader, base.ResponseHeader), cmp.Or(tm.Read, base.Read), cmp.Or(tm.Write, base.Write)}
}

// Route returns a RoundTripper over t whose requests take tm's non-zero
// fields before the Transport's, such as a route's: set once, where
// WithTimeouts costs a context and a request copy per request.
func (t *Transport) Route(tm Timeouts) http.RoundTripper { return &routed{t, tm} }

type routed struct {
	t  *Transport
	tm Timeouts
}

func (r *routed) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.t.roundTrip(req, r.tm)
}

// Transport is the RoundTripper. It is safe for concurrent use.
type Transport struct {
	opts     Options
	fallback http.RoundTripper
	dialer   net.Dialer

	// pools maps "host:port" to its pool. It is copied on write so that
	// the request path reads it without a lock; backends are few.
	pools   atomic.Pointer[map[string]*pool]
	poolsMu sync.Mutex
}

// New returns a Transport. fallback serves what New's transport does not
// (see the package comment); it may be nil, and those requests then fail.
func New(opts Options, fallback http.RoundTripper) *Transport {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 4 * time.Second
	}
	if opts.MaxIdlePerHost <= 0 {
		opts.MaxIdlePerHost = 64
	}
	if opts.MaxResponseHeaderBytes <= 0 {
		opts.MaxResponseHeaderBytes = 1 << 20
	}
	t := &Transport{
		opts:     opts,
		fallback: fallback,
		dialer:   net.Dialer{Timeout: opts.ConnectTimeout},
	}
	t.pools.Store(&map[string]*pool{})
	return t
}

// RoundTrip sends req and returns the response head; the body streams from
// the connection, which goes back to the pool when the body was read to EOF.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.roundTrip(req, Timeouts{})
}

func (t *Transport) roundTrip(req *http.Request, route Timeouts) (*http.Response, error) {
	if req.URL == nil {
		closeBody(req)
		return nil, errors.New("h1client: nil Request.URL")
	}
	if why := needsFallback(req); why != "" {
		if t.fallback == nil {
			closeBody(req)
			return nil, fmt.Errorf("h1client: %s needs the fallback transport, and there is none", why)
		}
		return t.fallback.RoundTrip(req)
	}
	if req.URL.Host == "" {
		closeBody(req)
		return nil, errors.New("h1client: no Host in request URL")
	}
	// A token, as net/http.Transport requires: it is written into the
	// request line as it is.
	if req.Method != "" && !httpguts.ValidHeaderFieldName(req.Method) {
		closeBody(req)
		return nil, fmt.Errorf("h1client: invalid method %q", clip(req.Method))
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		closeBody(req)
		return nil, err // the client has gone: nothing to spend on it
	}
	tm := t.timeouts(ctx, route)
	p := t.pool(hostPort(req.URL))
	c := p.get()
	for retried := false; ; retried = true {
		if c == nil {
			nc, err := t.dialer.DialContext(t.dialContext(ctx), "tcp", p.addr)
			if err != nil {
				closeBody(req)
				return nil, err // a *net.OpError with Op "dial": the request never left
			}
			c = newConn(nc, p)
		}
		if err := ctx.Err(); err != nil {
			// Gone before a byte was written: the connection is whole, and
			// the next request takes it, so that clients who open requests
			// and cancel them at once (an HTTP/2 rapid reset) cannot make
			// the node open, and close, a backend connection for each.
			p.put(c)
			closeBody(req)
			return nil, err
		}
		resp, again, err := t.exchange(ctx, c, req, tm)
		if err == nil {
			return resp, nil
		}
		if again == never || retried || again == ifIdempotent && !replayable(req) {
			return nil, err
		}
		if req, err = rewind(req); err != nil {
			return nil, err
		}
		c = nil
	}
}

// dialContext is what a dial for ctx's request runs under: not the
// request's cancellation, when ConnectTimeout bounds the dial without it,
// so that a connection dialed for a request that has gone meanwhile is
// pooled rather than thrown away.
func (t *Transport) dialContext(ctx context.Context) context.Context {
	if t.dialer.Timeout > 0 {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

// resend says whether a failed exchange may go again on a new connection.
type resend int

const (
	never resend = iota
	// ifIdempotent: a pooled connection failed before any byte of the
	// answer, most likely closed by the server as the request went out;
	// but the server may have read the request and died.
	ifIdempotent
	// always: not a byte of the request reached the backend.
	always
)

// CloseIdleConnections closes the pooled connections, and the fallback's.
func (t *Transport) CloseIdleConnections() {
	for _, p := range *t.pools.Load() {
		p.closeIdle()
	}
	if ci, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// exchange writes req on c and reads the response head; again says
// whether a failed exchange may be resent.
func (t *Transport) exchange(ctx context.Context, c *conn, req *http.Request, tm Timeouts) (resp *http.Response, again resend, err error) {
	var stop func() bool
	if ctx.Done() != nil {
		// Closing the connection is what interrupts a blocked read or write.
		stop = context.AfterFunc(ctx, c.abort)
	}
	fail := func(err error) (*http.Response, resend, error) {
		if stop != nil {
			stop()
		}
		c.nc.Close()
		if c.head != nil {
			putHead(c)
		}
		return nil, never, t.mapErr(ctx, err)
	}

	c.tm, c.sent, c.headBy, c.wres, c.answered = tm, 0, time.Time{}, nil, false
	if hasBody(req) {
		c.writeAside(req) // the answer is read meanwhile
	} else {
		c.wres = c.write(req)
	}
	c.br = getReader(c)
	c.head = heads.Get().(*[]byte)
	c.inHead = true
	for {
		if c.writing == nil {
			if again, ok := c.judgeWrite(ctx, req); !ok {
				_, _, err := fail(c.wres)
				return nil, again, err
			}
			if tm.ResponseHeader > 0 && c.headBy.IsZero() {
				c.headBy = time.Now().Add(tm.ResponseHeader)
			}
		}
		_, err := c.br.Peek(1)
		if err == nil {
			break
		}
		if err == errWriteFailed {
			continue // judged now, and the answer read if it may have come
		}
		c.wrote() // no answer: how the write ended decides
		if again, ok := c.judgeWrite(ctx, req); !ok {
			_, _, err := fail(c.wres)
			return nil, again, err
		}
		if c.wres != nil {
			err = c.wres
		}
		_, _, err = fail(err)
		var timeout *timeoutError
		if c.reused && ctx.Err() == nil && !errors.As(err, &timeout) {
			return nil, ifIdempotent, err
		}
		return nil, never, err
	}
	h, err := c.readResponse(req, t.opts.MaxResponseHeaderBytes)
	if err != nil {
		return fail(err)
	}
	c.inHead = false
	putHead(c)
	resp = &h.r
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("h1client: 101 Switching Protocols to a request that asked for no upgrade"))
	}
	b := &h.body
	*b = body{c: c, ctx: ctx, t: t, stop: stop, resp: resp}
	if err := b.frame(h, req); err != nil {
		return fail(err)
	}
	// After Transfer-Encoding on HTTP/1.0 the framing is faulty (RFC 9112
	// 6.1): the connection closes. The write, which may still be going, is
	// judged at release.
	b.keep = !(h.te && resp.ProtoMinor == 0) && !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		c.release(b.keep, stop)
	}
	return resp, never, nil
}

// judgeWrite judges the request's ended write: ok when the answer is
// worth reading (it succeeded, or the connection failed once some of it
// had gone: a server may answer (413, 401) before it read the whole body,
// then close); else whether the request may be resent.
func (c *conn) judgeWrite(ctx context.Context, req *http.Request) (again resend, ok bool) {
	switch {
	case c.wres == nil:
		return never, true
	case c.werr == nil:
		return never, false // the request or its body failed, not the connection
	case errors.As(c.wres, new(*timeoutError)):
		return never, false // a backend that reads nothing will hardly answer
	case c.sent == 0 && ctx.Err() == nil:
		if hasBody(req) && req.GetBody == nil {
			return never, false // what was read of the body is gone
		}
		return always, false
	}
	return never, true
}

func putHead(c *conn) {
	putHeadBuf(c.head)
	c.head = nil
}

func putHeadBuf(b *[]byte) {
	if cap(*b) <= maxPooledHead {
		*b = (*b)[:0]
		heads.Put(b)
	}
}

// mapErr turns what a connection the context closed reports into its cause.
func (t *Transport) mapErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// timeoutError is the net.Error of an expired Timeouts field.
type timeoutError struct {
	what string
	d    time.Duration
}

func (e *timeoutError) Error() string   { return fmt.Sprintf("h1client: %s %v", e.what, e.d) }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
func (e *timeoutError) Unwrap() error   { return os.ErrDeadlineExceeded }

var _ net.Error = (*timeoutError)(nil)

// needsFallback names why req is not ours, or returns "".
func needsFallback(req *http.Request) string {
	switch {
	case req.URL.Scheme != "http":
		return "scheme " + req.URL.Scheme
	case hasToken(req.Header["Connection"], "upgrade"):
		return "an upgrade"
	case hasBody(req) && hasToken(req.Header["Expect"], "100-continue"):
		// Waiting for 100 Continue before sending the body needs a reader
		// and a writer at once; net/http.Transport has both.
		return "Expect: 100-continue"
	}
	return ""
}

// hasToken reports whether the comma-separated header values hold token.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

func hasBody(req *http.Request) bool { return req.Body != nil && req.Body != http.NoBody }

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// replayable requests can send their body again and are idempotent (RFC
// 9110, 9.2.2), or say so with an Idempotency-Key as net/http allows.
func replayable(req *http.Request) bool {
	if hasBody(req) && req.GetBody == nil {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// rewind returns req with a fresh body for a second attempt.
func rewind(req *http.Request) (*http.Request, error) {
	if !hasBody(req) {
		return req, nil
	}
	b, err := req.GetBody()
	if err != nil {
		return nil, fmt.Errorf("h1client: rewinding request body: %w", err)
	}
	r2 := *req
	r2.Body = b
	return &r2, nil
}

// hostPort is u's address with the default port made explicit.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "80")
}
