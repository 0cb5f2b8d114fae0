// Package proxy streams requests to a service's backends: it sets the
// forwarding headers, picks a backend per attempt, retries failed connects
// within the service's budget, and turns upstream failures into the node's
// JSON errors (502, 503, 504, 413).
package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"perigee/edge/exchange"
	"perigee/edge/h1client"
	"perigee/edge/upstream"
	"perigee/units"
)

// Proxy owns the pooled upstream connections shared by every service.
type Proxy struct {
	transport *h1client.Transport // http:// backends; the rest go to std
	std       *http.Transport     // https backends, upgrades, health checks
	via       string
	log       *slog.Logger
}

// Timeouts bound the proxy's side of a request.
type Timeouts struct {
	Connect        units.Duration `yaml:"connect" json:"connect"`
	ResponseHeader units.Duration `yaml:"response_header" json:"response_header"`
	Idle           units.Duration `yaml:"idle" json:"idle"` // pooled upstream connections, and the listeners' keep-alive
}

// SetDefaults fills what the config leaves out.
func (t *Timeouts) SetDefaults() {
	for _, d := range []struct {
		v   *units.Duration
		def time.Duration
	}{{&t.Connect, 2 * time.Second}, {&t.ResponseHeader, 30 * time.Second}, {&t.Idle, 90 * time.Second}} {
		if *d.v == 0 {
			*d.v = units.Duration(d.def)
		}
	}
}

// New builds a proxy with the node's timeouts. Plain-HTTP backends get a
// synchronous HTTP/1.1 client (no goroutines per connection, about a tenth
// less CPU per request); the standard transport serves the rest.
func New(t Timeouts, nodeID string, log *slog.Logger) *Proxy {
	dialer := &net.Dialer{Timeout: t.Connect.D(), KeepAlive: 30 * time.Second}
	std := &http.Transport{
		DialContext:           dialer.DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       t.Idle.D(),
		ResponseHeaderTimeout: t.ResponseHeader.D(),
		ExpectContinueTimeout: time.Second,
		// Compression is the client's business: pass bodies through as they are.
		DisableCompression: true,
	}
	h1 := h1client.New(h1client.Options{
		ConnectTimeout: t.Connect.D(), ResponseHeaderTimeout: t.ResponseHeader.D(),
		IdleTimeout: t.Idle.D(), MaxIdlePerHost: 512,
	}, std)
	return &Proxy{transport: h1, std: std, via: nodeID, log: log}
}

// Client is an HTTP client over the proxy's pool, for health checks.
func (p *Proxy) Client() *http.Client { return &http.Client{Transport: p.std} }

// Close drops idle upstream connections.
func (p *Proxy) Close() { p.transport.CloseIdleConnections() }

// Handler serves requests from svc's backends.
func (p *Proxy) Handler(svc *upstream.Service) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      &balancing{svc: svc, base: p.transport},
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.fail,
		BufferPool:     buffers{},
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	in, out := pr.In, pr.Out
	// Append to the client's X-Forwarded-For rather than replace it: the
	// trust decision belongs to whoever reads it (see geo.trusted_proxies).
	if prior, ok := in.Header["X-Forwarded-For"]; ok {
		out.Header["X-Forwarded-For"] = append([]string(nil), prior...)
	}
	pr.SetXForwarded()
	out.Header.Add("Via", protoVersion(in)+" "+p.via)
	// The query goes as the client sent it (the node checked its bytes):
	// ReverseProxy's re-encoding would drop what it cannot parse.
	out.URL.RawQuery = in.URL.RawQuery
	out.URL.Scheme = "http" // the balancer sets the real scheme and host per attempt
	if x := exchange.From(in.Context()); x != nil {
		out.Header.Set("X-Request-Id", x.ID)
		out.Header.Set("Traceparent", x.Trace.Header())
	}
}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	resp.Header.Add("Via", protoVersion(resp.Request)+" "+p.via)
	return nil
}

// protoVersion is the Via header's received-protocol: "1.1", "2" or "3".
func protoVersion(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "2"
	case 3:
		return "3"
	default:
		return "1.1"
	}
}

// fail maps what went wrong to the status the client sees.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := classify(r, err)
	if x := exchange.From(r.Context()); x != nil {
		x.Status = status
	}
	if status == statusClientGone {
		return // nobody is listening
	}
	p.log.Debug("proxy error", "status", status, "path", r.URL.Path, "err", err)
	exchange.Error(w, r, status, msg)
}

// statusClientGone is nginx's 499: the client left before the answer.
const statusClientGone = 499

func classify(r *http.Request, err error) (int, string) {
	var tooBig *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.Is(err, upstream.ErrNoHealthy):
		return http.StatusServiceUnavailable, "no healthy backend"
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, "request body too large"
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
	base http.RoundTripper
}

func (t *balancing) RoundTrip(req *http.Request) (*http.Response, error) {
	x := exchange.From(req.Context())
	t.svc.Attempt()
	// A request body that fails to read is the client's fault (it left, or
	// sent too much), not the backend's: watch for it.
	var body *clientBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &clientBody{ReadCloser: req.Body}
		req.Body = body
	}
	var skip *upstream.Backend
	for attempt := 0; ; attempt++ {
		b, err := t.svc.Pick(req, skip)
		if err != nil {
			return nil, err
		}
		req.URL.Scheme, req.URL.Host = b.URL.Scheme, b.Addr
		b.Begin()
		start := time.Now()
		resp, err := t.base.RoundTrip(req)
		if err != nil {
			b.End()
			clientsFault := req.Context().Err() != nil || (body != nil && body.failed)
			t.svc.Done(b, time.Since(start), !clientsFault)
			if isConnectFailure(err) && attempt < t.svc.MaxRetries() && replayable(req) && t.svc.RetryAllowed() {
				skip = b
				if x != nil {
					x.Retries++
				}
				continue
			}
			return nil, err
		}
		t.svc.Done(b, time.Since(start), resp.StatusCode >= 500)
		if x != nil {
			x.Backend = b.Addr
		}
		resp.Body = releasing(resp.Body, b)
		return resp, nil
	}
}

// clientBody notes whether reading the client's request body failed.
type clientBody struct {
	io.ReadCloser
	failed bool
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.failed = true
	}
	return n, err
}

// isConnectFailure is true when the request never reached the backend, so a
// retry cannot run it twice.
func isConnectFailure(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// replayable requests are idempotent and carry no body to re-send.
func replayable(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return r.Body == nil || r.Body == http.NoBody
	}
	return false
}

// releasing ends the backend's in-flight count when the body is closed. A
// 101 Switching Protocols body is read-write (a WebSocket), and keeps being.
func releasing(body io.ReadCloser, b *upstream.Backend) io.ReadCloser {
	if rw, ok := body.(io.ReadWriteCloser); ok {
		return &releaseRW{releaseBody: releaseBody{ReadCloser: body, b: b}, w: rw}
	}
	return &releaseBody{ReadCloser: body, b: b}
}

type releaseBody struct {
	io.ReadCloser
	b    *upstream.Backend
	once sync.Once
}

func (r *releaseBody) Close() error {
	r.once.Do(r.b.End)
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
