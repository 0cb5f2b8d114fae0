// Package h1client is a synchronous HTTP/1.1 http.RoundTripper for
// plain-HTTP backends.
//
// net/http.Transport runs a read and a write goroutine per connection and
// hands every request and response between them over channels; in a proxy
// those handoffs and wake-ups cost a quarter of the CPU. Here the calling
// goroutine writes the request and reads the response itself, on keep-alive
// connections pooled per backend address.
//
// Requests it does not handle go to a fallback RoundTripper (normally an
// *http.Transport): other schemes than http, protocol upgrades (WebSocket)
// and requests with a body that expect 100-continue.
package h1client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options tune a Transport. Zero values take the defaults noted.
type Options struct {
	// ConnectTimeout bounds a dial; 0 leaves it to the request's context.
	ConnectTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response head once the
	// request is written; 0 means no limit but the context.
	ResponseHeaderTimeout time.Duration
	// IdleTimeout closes a pooled connection left unused this long; 0 means 90s.
	IdleTimeout time.Duration
	// MaxIdlePerHost bounds each backend's idle pool; 0 means 64.
	MaxIdlePerHost int
	// MaxResponseHeaderBytes bounds the response head, interim 1xx heads
	// included; 0 means 1 MiB.
	MaxResponseHeaderBytes int64
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
		opts.IdleTimeout = 90 * time.Second
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
	ctx := req.Context()
	p := t.pool(hostPort(req.URL))
	c := p.get()
	for retried := false; ; retried = true {
		if c == nil {
			nc, err := t.dialer.DialContext(ctx, "tcp", p.addr)
			if err != nil {
				closeBody(req)
				return nil, err // a *net.OpError with Op "dial": the request never left
			}
			c = &conn{nc: nc, pool: p}
		}
		resp, stale, err := t.exchange(ctx, c, req)
		if err == nil {
			return resp, nil
		}
		// A pooled connection the server had already closed fails before
		// any byte of the answer; the request may go again on a new one.
		if !stale || retried || !replayable(req) {
			return nil, err
		}
		if req, err = rewind(req); err != nil {
			return nil, err
		}
		c = nil
	}
}

// CloseIdleConnections closes the pooled connections, and the fallback's.
func (t *Transport) CloseIdleConnections() {
	for _, p := range *t.pools.Load() {
		p.closeIdle()
	}
	if ci, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// exchange writes req on c and reads the response head. stale reports that
// c was a pooled connection that failed before the server sent a byte.
func (t *Transport) exchange(ctx context.Context, c *conn, req *http.Request) (resp *http.Response, stale bool, err error) {
	var stop func() bool
	if ctx.Done() != nil {
		// Closing the connection is what interrupts a blocked read or write.
		stop = context.AfterFunc(ctx, func() { c.nc.Close() })
	}
	fail := func(err error) (*http.Response, bool, error) {
		if stop != nil {
			stop()
		}
		c.nc.Close()
		return nil, false, t.mapErr(ctx, err)
	}

	werr := c.write(req)
	if werr != nil && c.werr == nil {
		return fail(werr) // the request or its body failed, not the connection
	}
	// Read the answer even after a failed write: a server may answer (413,
	// 401) before it read the whole body, then close.
	if t.opts.ResponseHeaderTimeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(t.opts.ResponseHeaderTimeout))
	}
	c.br = getReader(c)
	c.headLeft = t.opts.MaxResponseHeaderBytes
	if _, err := c.br.Peek(1); err != nil {
		if werr != nil {
			err = werr
		}
		_, _, err = fail(err)
		_, timeout := err.(*timeoutError)
		return nil, c.reused && ctx.Err() == nil && !timeout, err
	}
	resp, err = readResponse(c.br, req)
	if err != nil {
		return fail(err)
	}
	c.headLeft = -1
	if t.opts.ResponseHeaderTimeout > 0 {
		c.nc.SetReadDeadline(time.Time{})
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("h1client: 101 Switching Protocols to a request that asked for no upgrade"))
	}
	keep := werr == nil && !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		c.release(keep, stop)
		return resp, false, nil
	}
	resp.Body = &body{src: resp.Body, c: c, ctx: ctx, t: t, stop: stop, keep: keep}
	return resp, false, nil
}

// readResponse reads the final response head, passing interim 1xx ones
// (100 Continue, 103 Early Hints) to the request's httptrace, as
// net/http does: httputil.ReverseProxy forwards them to its client.
func readResponse(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, err
		}
		code := resp.StatusCode
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			return resp, nil
		}
		if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, err
			}
		}
	}
}

// mapErr turns what a closed or timed-out connection reports into its cause.
func (t *Transport) mapErr(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &timeoutError{t.opts.ResponseHeaderTimeout}
	}
	return err
}

// timeoutError is the net.Error of an expired ResponseHeaderTimeout.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string {
	return fmt.Sprintf("h1client: no response head within %v", e.d)
}
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

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
