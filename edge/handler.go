package edge

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"perigee/edge/admission"
	"perigee/edge/config"
	"perigee/edge/exchange"
	"perigee/edge/metrics"
	"perigee/edge/proxy"
	"perigee/edge/route"
	"perigee/edge/urlpath"
	"perigee/geo"
)

// ServeHTTP is the request path of every listener: match a route, check the
// limits, hand the request to the route's chain, record the outcome.
func (n *Node) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := n.acquire()
	defer st.release()
	client := r.Context() // the listener's: done when the client gives up
	x, ctx := exchange.Begin(r, start)
	r = r.WithContext(ctx)
	x.Client = geo.ResolveClient(r, n.fleet.trusted)
	rec := recorders.Get().(*recorder)
	rec.ResponseWriter, rec.x, rec.hijacks = w, x, &n.listeners.hijacked
	rec.send.begin(w, st.cfg.Timeouts.Idle.D())
	if r.ProtoMajor < 3 {
		rec.free = buffered
	}
	rec.noInterim = !r.ProtoAtLeast(1, 1)
	rec.own = n.setOwnHeaders(w.Header(), r, x.ID)

	var entry *routeEntry
	var stats *metrics.ServiceStats
	badErr := checkMethod(r.Method)
	if badErr == nil && overridesMethod(r) {
		badErr = errMethodOverride
	}
	if badErr == nil && !route.ValidHost(r.Host) {
		badErr = errHost
	}
	if badErr == nil {
		badErr = normalizeTarget(r)
	}
	if badErr == nil && (n.fleet.nodesAPI == nil || r.URL.Path != geo.NodesPath) {
		if entry, _ = st.routes.Match(r.Host, r.Method, r.URL.Path); entry != nil {
			x.Route, x.Service, stats = entry.name, entry.service.Name, entry.series.Stats
			rec.tunnelIdle = entry.tunnelIdle
		}
	}
	n.metrics.Begin(stats)
	var slot netip.Prefix // the client's count of requests in flight, if it is bounded
	// Deferred, because a response cut mid-body (http.ErrAbortHandler)
	// unwinds by panic and must still leave the in-flight counts.
	defer func() {
		took := time.Since(start)
		if x.Status == 0 {
			x.Status = http.StatusOK // the handler wrote nothing
		}
		if entry != nil {
			n.metrics.DoneRoute(entry.series, r.Proto, x.Status, took, x.Steered)
		} else {
			n.metrics.Done(nil, "", "", r.Proto, x.Status, took)
		}
		n.metrics.Retried(x.Service, x.Retries)
		st.access.Log(r, x, took)
		if noteAbandon(client, start, rec.final) {
			n.metrics.AbandoningClosed(r.Proto)
		}
		if rec.conn != nil {
			rec.hijacks.remove(rec.conn)
		}
		if rec.conn == nil {
			rec.send.tail()
		}
		rec.send.end()
		*rec = recorder{send: rec.send}
		recorders.Put(rec)
		if slot.IsValid() {
			n.clients.Release(slot)
		}
		exchange.End(x)
	}()
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		// Before it writes an answer, net/http reads and drops what is
		// left of a body nobody read (a refusal's, a transform's own
		// answer's), up to 256 KiB, to keep the connection. This bounds
		// that read; slowBody replaces it at each read of its own.
		idle := st.cfg.Timeouts.ClientBody.D()
		if entry != nil {
			idle = entry.clientBody
		}
		if idle > 0 {
			_ = http.NewResponseController(w).SetReadDeadline(start.Add(idle))
		}
	}
	switch {
	case badErr == errConnect:
		exchange.Error(rec, r, http.StatusNotImplemented, badErr.Error())
	case badErr != nil:
		exchange.Error(rec, r, http.StatusBadRequest, badErr.Error())
	case headerBytes(r) > int(st.cfg.Limits.MaxHeaderBytes):
		exchange.Error(rec, r, http.StatusRequestHeaderFieldsTooLarge, "request headers too large")
	case entry == nil && n.fleet.nodesAPI != nil && r.URL.Path == geo.NodesPath:
		n.fleet.nodesAPI.ServeHTTP(rec, r)
	case entry == nil:
		exchange.Error(rec, r, http.StatusNotFound, "no route for "+r.Host+r.URL.Path)
	case st.cfg.Limits.MaxBodyBytes > 0 && r.ContentLength > int64(st.cfg.Limits.MaxBodyBytes):
		exchange.Error(rec, r, http.StatusRequestEntityTooLarge, "request body too large")
	case !n.admitClient(st.cfg.Limits, rec, r, x, &slot):
	case !admit(entry.gate, rec, r, start):
	default:
		dropNominated(r.Header)
		stripOwnHeaders(r.Header)
		x.Client.Forward(r.Header)
		// The chain is told the id and trace the backend and the log get,
		// not a client's that the node refused or continued.
		// One array for both (an allocation a request); each slice's
		// capacity ends at its own value, so appending to one moves it.
		ids := []string{x.ID, x.Trace.Header()}
		r.Header["X-Request-Id"], r.Header["Traceparent"] = ids[:1:1], ids[1:]
		if !x.Trace.Continued {
			delete(r.Header, "Tracestate") // a trace's vendor state, not this new one's
		}
		if n.fleet.country != nil {
			n.fleet.country.tag(r, x.Client)
		}
		if r.Body != nil && r.Body != http.NoBody {
			if max := int64(st.cfg.Limits.MaxBodyBytes); max > 0 {
				r.Body = http.MaxBytesReader(rec, r.Body, max)
			}
			body := &slowBody{ReadCloser: r.Body, rc: *http.NewResponseController(w), idle: entry.clientBody}
			defer body.finish()
			r.Body = body
		}
		entry.handler.ServeHTTP(rec, r)
		if !rec.final && rec.conn == nil && r.Context().Err() != nil {
			// The client left (over HTTP/1.1 a half-close looks the same)
			// before any answer but a 1xx: send none, rather than the
			// empty 200 net/http writes for a handler that wrote no final
			// head.
			panic(http.ErrAbortHandler)
		}
	}
}

// errMethodCase is a method route.ValidMethod refuses.
var errMethodCase = errors.New("method must be upper case (A-Z, 0-9, - and _)")

// methodOverrides are the headers backends read as the request's method
// (Express's method-override, Laravel, Rack, ASP.NET): a client's would
// have the node route by one method and the backend serve another, past
// the routes that match methods (proxy.TargetOverrides are the path's).
var methodOverrides = [...]string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// overridesMethod reports whether r names a method other than its own in
// a method override header. One naming its own (in any case) changes
// nothing, and goes on.
func overridesMethod(r *http.Request) bool {
	for _, k := range methodOverrides {
		for _, v := range r.Header[k] {
			if !strings.EqualFold(textproto.TrimString(v), r.Method) {
				return true
			}
		}
	}
	return false
}

// errMethodOverride refuses a request overridesMethod found.
var errMethodOverride = errors.New("method override headers (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override) must name the request's own method: send the method itself")

// errHost is a host route.ValidHost refuses.
var errHost = errors.New("host must be a DNS name or a bracketed IP literal, with an optional numeric port")

// errConnect refuses CONNECT in every form (HTTP/1.1 with a path for its
// target, HTTP/3's extended CONNECT): the node is a reverse proxy and
// relays no tunnels. Passed on, the backend got a CONNECT and the client a
// 200 for a tunnel nothing relayed.
var errConnect = errors.New("CONNECT is not supported: the node relays no tunnels")

func checkMethod(m string) error {
	switch {
	case !route.ValidMethod(m):
		return errMethodCase
	case m == http.MethodConnect:
		return errConnect
	}
	return nil
}

// normalizeTarget puts the normal form of the request target (edge/urlpath)
// in every place that reads it: the router, the transforms and the proxy
// see, and the backend receives, the one path the route matched.
func normalizeTarget(r *http.Request) error {
	p, q, err := urlpath.Normalize(r.RequestURI)
	if err != nil {
		return err
	}
	decoded, err := url.PathUnescape(p)
	if err != nil {
		return err // cannot happen: a normal path's escapes are well formed
	}
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.URL.ForceQuery = decoded, p, q, false
	if !isTarget(r.RequestURI, p, q) {
		r.RequestURI = r.URL.RequestURI()
	}
	return nil
}

// rewritten puts what a route's transforms may have rewritten (http-wasm
// set_uri, proxy-wasm :path and :method) through the checks the client's
// request went through, before next forwards it: a backend receives the
// normal path whoever wrote it. A rewrite the node refuses is a bug in the
// operator's transform, not the client's: 500, naming the transforms. The
// rewrite is not routed again; it goes to the route's service.
type rewritten struct {
	route, transforms string
	next              http.Handler
}

func (h *rewritten) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	err := checkMethod(r.Method)
	if err == nil && !isNormalTarget(r.RequestURI) {
		err = normalizeTarget(r)
	}
	if err != nil {
		msg := fmt.Sprintf("route %q: transforms [%s] rewrote the request to one the node refuses: %v", h.route, h.transforms, err)
		if x := exchange.From(r.Context()); x != nil {
			x.Error = msg
		}
		exchange.Error(w, r, http.StatusInternalServerError, msg)
		return
	}
	h.next.ServeHTTP(w, r)
}

// isNormalTarget reports, without allocating, whether target is already in
// the form normalizeTarget gives.
func isNormalTarget(target string) bool {
	p, q, err := urlpath.Normalize(target)
	return err == nil && isTarget(target, p, q)
}

// isTarget reports whether target is spelled p?q (p when q is empty): what
// r.URL.RequestURI() gives for a normal path p, which needs no escaping,
// and the query q. A normal target keeps its string rather than a copy.
func isTarget(target, p, q string) bool {
	rest, ok := strings.CutPrefix(target, p)
	return ok && (rest == "" && q == "" || q != "" && len(rest) == len(q)+1 && rest[0] == '?' && rest[1:] == q)
}

// stripOwnHeaders drops the client's X-Perigee-* headers: the node sets
// its own, and a backend must be able to trust them. It drops every header
// whose name has a '_' too, as nginx does: CGI and WSGI backends read
// X_Perigee_Country, X_Request_Id or X_Jwt_Sub as the header the node or
// a transform sets, so a client could pass its own beside it (Envoy's
// guidance for an edge refuses them). And it drops the client's
// proxy.TargetOverrides, which the route's transforms may still set.
func stripOwnHeaders(h http.Header) {
	for k := range h {
		if proxy.OwnField(k) {
			delete(h, k)
		}
	}
	for _, k := range proxy.TargetOverrides {
		delete(h, k)
	}
}

// dropNominated removes the headers the client's Connection header names,
// which end at the node (RFC 9110 7.6.1), as the request comes in: left to
// the proxy, their removal came after the node and the route's transforms
// had set theirs, so that a client could name X-Perigee-Country, or a
// header a transform sets for the backend, and have it dropped. Connection
// keeps only the options the listener and the proxy read (close,
// keep-alive, upgrade), which name no header the node sets. Nor are the
// forwarding headers the node read its client from (geo.NamesClient): it
// passes them on as it read them, or drops them all.
func dropNominated(h http.Header) {
	vs, ok := h["Connection"]
	if !ok {
		return
	}
	var kept []string
	for _, v := range vs {
		for opt := range strings.SplitSeq(v, ",") {
			switch opt = textproto.TrimString(opt); {
			case strings.EqualFold(opt, "close"), strings.EqualFold(opt, "keep-alive"), strings.EqualFold(opt, "upgrade"):
				kept = append(kept, opt)
			case opt != "" && !geo.NamesClient(opt):
				h.Del(opt)
			}
		}
	}
	if len(kept) == 0 {
		delete(h, "Connection")
		return
	}
	h["Connection"] = []string{strings.Join(kept, ", ")}
}

// slowBody bounds each wait for the client's request body: a client that
// stops sending fails the read (the proxy answers 408) rather than holding
// the request, its upstream connection and its transform instance. The
// deadline is the listener's, through ResponseController: HTTP/1.1 and
// HTTP/2 streams and HTTP/3 streams all support it. The controller is held
// by value: one allocation per request body rather than two.
type slowBody struct {
	io.ReadCloser
	rc   http.ResponseController
	idle time.Duration
	// mu orders Reads with finish: a transport may still read the body on
	// its own goroutine after the handler returned, when over HTTP/1.1 the
	// connection may already serve the next request.
	mu   sync.Mutex
	done bool // the handler returned: set no deadline, read nothing
	set  bool // a deadline is set and must be lifted at EOF
}

var errBodyAfterHandler = errors.New("request body read after the request ended")

func (b *slowBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		return 0, errBodyAfterHandler
	}
	if b.idle > 0 {
		b.set = b.rc.SetReadDeadline(time.Now().Add(b.idle)) == nil
	}
	b.mu.Unlock()
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.mu.Lock()
		if b.set && !b.done {
			// A WebSocket or the next keep-alive request is not the body's.
			// After a failure the deadline stays: nothing more is read.
			b.rc.SetReadDeadline(time.Time{})
			b.set = false
		}
		b.mu.Unlock()
	}
	return n, err
}

// finish ends the body's use of the connection when the handler returns.
// A deadline left set bounds net/http's drain of an unread body; the next
// request's header read replaces it.
func (b *slowBody) finish() {
	b.mu.Lock()
	b.done = true
	b.mu.Unlock()
}

// headerBytes is the request's header size as the client sent it, near
// enough: the listeners enforce a hard cap, this gives the JSON 431 below it.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + len(r.Host) + 4
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// recorder notes the status and size of the response for metrics and logs.
// Unwrap lets http.ResponseController reach the listener's writer, for
// flushing streams and hijacking WebSocket upgrades.
type recorder struct {
	http.ResponseWriter
	x       *exchange.Exchange
	hijacks *hijacks
	send    *sendWatch // kept in the pool with its recorder
	free    int        // what may still be written unwatched (buffered)
	conn    net.Conn   // hijacked, tracked until the handler returns
	// tunnelIdle is the route's timeouts.tunnel_idle, for a hijack.
	tunnelIdle time.Duration
	final      bool // the response's own head (not a 1xx) went out
	// noInterim drops 1xx heads: an HTTP/1.0 client, or an HTTP/1.0
	// proxy in front of the node, reads the first head it gets as the
	// response (RFC 9110 15.2: a server must not send it one).
	noInterim bool
	// own holds the node's headers, for the final head to carry even
	// when the map lost them: the proxy clears it after relaying a 1xx,
	// and a transform's own answer may start from an empty one.
	own [len(ownHeaders)]string
}

// ownHeaders are the headers the node sets on every response before the
// route's handler runs (setOwnHeaders).
var ownHeaders = [...]string{"X-Request-Id", "Alt-Svc"}

// setOwnHeaders sets the request id, and on HTTPS over TCP the Alt-Svc
// that advertises HTTP/3, in one allocation: the keys are canonical, and
// each value slice is full so that an Add cannot write into the other. It
// returns their values, in the order of ownHeaders.
func (n *Node) setOwnHeaders(h http.Header, r *http.Request, id string) [len(ownHeaders)]string {
	if alt := n.listeners.altSvc; alt != "" && r.TLS != nil && r.ProtoMajor < 3 {
		v := []string{id, alt}
		h["X-Request-Id"], h["Alt-Svc"] = v[:1:1], v[1:]
		return [...]string{id, alt}
	}
	h["X-Request-Id"] = []string{id}
	return [...]string{id, ""}
}

var recorders = sync.Pool{New: func() any { return &recorder{send: newSendWatch()} }}

var (
	_ http.Flusher  = (*recorder)(nil)
	_ http.Hijacker = (*recorder)(nil)
)

func (w *recorder) WriteHeader(code int) {
	switch {
	case code >= 200 || code == http.StatusSwitchingProtocols:
		if !w.final {
			w.finalHead(code)
		}
	case w.noInterim:
		return
	default:
		w.interimHead()
		if w.x.Status == 0 {
			w.x.Status = code
		}
	}
	if w.free > 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.ResponseWriter.WriteHeader(code) // held with the body
		return
	}
	w.send.start()
	w.ResponseWriter.WriteHeader(code) // a 1xx goes out at once
	w.send.stop()
}

// buffered is how much of an answer net/http's HTTP/1.1 and HTTP/2 writers
// hold before any of it goes to the client (2 KiB over HTTP/1.1, 4 KiB
// over HTTP/2), with the final head: writes within it cannot wait on the
// client, so they go unwatched, and what they hold goes out after the
// handler returns, under sendWatch.tail. Watching each write costs two
// timer operations; most answers are this small. Every HTTP/3 write is
// watched; quic-go's writer holds back an answer under 4 KiB whole, which
// goes out after the handler returns, under sendWatch.tail too.
const buffered = 2 << 10

// finalHead notes the response's status and makes the node's own headers
// the node's alone: the map may have lost them (the proxy clears it after
// relaying a 1xx), and the proxy adds a backend's after them. A backend's
// Alt-Svc would send clients to reach this origin elsewhere, past the
// node, or stop its HTTP/3; a second X-Request-Id is not the one logged.
//
// A 204 or 304 loses any Content-Length a backend sent (RFC 9110 8.6
// forbids one on a 204 and lets a 304 go without): net/http's HTTP/2
// writer sends it, and Go's HTTP/2 client then waits for that many bytes
// and fails the response; quic-go sends it too.
func (w *recorder) finalHead(code int) {
	w.final = true
	w.x.Status = code
	w.ownAlone()
	if code == http.StatusNoContent || code == http.StatusNotModified {
		delete(w.ResponseWriter.Header(), "Content-Length")
	}
}

// ownAlone leaves the node's own headers in the head about to go out, with
// the node's values alone.
func (w *recorder) ownAlone() {
	h := w.ResponseWriter.Header()
	for i, k := range ownHeaders {
		if v := h[k]; w.own[i] == "" {
			delete(h, k)
		} else if len(v) != 1 || v[0] != w.own[i] {
			h[k] = []string{w.own[i]}
		}
	}
}

// interimFields end at a hop (RFC 9110 7.6.1), or may not be on a 1xx
// (Content-Length, RFC 9110 8.6).
var interimFields = [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"}

// interimHead makes a 1xx head (a backend's 103, which the proxy copies
// into the map whole) fit to relay, as finalHead does a final one: the
// node's own headers alone, and none of interimFields or the fields its
// Connection names. ReverseProxy drops those from a final response, not
// from a 1xx it relays; over HTTP/2 and HTTP/3 they make a response
// malformed (RFC 9113 8.2.2, RFC 9114 4.2), and an HTTP/3 client fails
// the request.
func (w *recorder) interimHead() {
	h := w.ResponseWriter.Header()
	for _, v := range h["Connection"] {
		for opt := range strings.SplitSeq(v, ",") {
			if opt = textproto.TrimString(opt); opt != "" {
				h.Del(opt)
			}
		}
	}
	for _, k := range interimFields {
		delete(h, k)
	}
	w.ownAlone() // after: Connection may name them
}

func (w *recorder) Write(b []byte) (int, error) {
	if !w.final {
		w.finalHead(http.StatusOK) // what the writer sends before a body
	}
	if len(b) <= w.free {
		w.free -= len(b)
		n, err := w.ResponseWriter.Write(b)
		w.x.Bytes += int64(n)
		return n, err
	}
	w.free = 0
	w.send.start()
	n, err := w.ResponseWriter.Write(b)
	w.send.stop()
	w.x.Bytes += int64(n)
	return n, err
}

func (w *recorder) Flush() {
	w.free = 0 // what follows may find the buffer's bytes still waiting
	w.send.start()
	_ = http.NewResponseController(w.ResponseWriter).Flush()
	w.send.stop()
}

// sendWatch cuts a response the client does not take: a write to it that
// waits longer than idle (timeouts.idle) fails, and the response with it,
// which frees the handler, its upstream connection and the backend. It
// bounds each wait, not the response: a slow client that keeps reading is
// not cut. A timer watches each write, rather than a deadline set before
// it, because an HTTP/2 stream's write deadline resets the stream when it
// passes even if no write is waiting then (a backend quiet for a while).
type sendWatch struct {
	timer *time.Timer
	mu    sync.Mutex
	rc    http.ResponseController
	idle  time.Duration
	until time.Time // while a write waits, when it is cut; zero otherwise
}

func newSendWatch() *sendWatch {
	s := &sendWatch{}
	s.timer = time.AfterFunc(time.Hour, s.expire)
	s.timer.Stop()
	return s
}

// begin watches the writes to w, the listener's writer, until end.
func (s *sendWatch) begin(w http.ResponseWriter, idle time.Duration) {
	s.mu.Lock()
	s.rc, s.idle = *http.NewResponseController(w), idle
	s.mu.Unlock()
}

func (s *sendWatch) end() {
	s.stop()
	s.mu.Lock()
	s.rc = http.ResponseController{}
	s.mu.Unlock()
}

// tail bounds the write the listener makes after the handler returns:
// what its buffers still hold, the whole of a small answer. Over HTTP/1.1
// it is a connection deadline, which lasts until it is lifted, so the
// listener lifts it when the connection goes idle (clearWriteDeadline).
// Over HTTP/2 and HTTP/3 it is the stream's: past it the stream is reset
// (over HTTP/3 an unfinished stream is not idle, so without it quic-go's
// idle timeout never came to a client that took none of its answers).
// (A flush before the handler returned would bound the same write at the
// cost of a frame and a hand-off to the connection's writer a request.)
func (s *sendWatch) tail() {
	if s.idle > 0 {
		_ = s.rc.SetWriteDeadline(time.Now().Add(s.idle))
	}
}

func (s *sendWatch) start() {
	if s.idle <= 0 {
		return
	}
	s.mu.Lock()
	s.until = time.Now().Add(s.idle)
	s.mu.Unlock()
	s.timer.Reset(s.idle)
}

func (s *sendWatch) stop() {
	if s.idle <= 0 {
		return
	}
	s.timer.Stop()
	s.mu.Lock()
	s.until = time.Time{}
	s.mu.Unlock()
}

// longAgo is a write deadline already past: it fails the waiting write.
var longAgo = time.Unix(1, 0)

// expire cuts the waiting write, unless this run of the timer is stale
// (Stop does not stop one that has begun): no write waits, or the one
// waiting started since.
func (s *sendWatch) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.until.IsZero() && !time.Now().Before(s.until) {
		_ = s.rc.SetWriteDeadline(longAgo)
	}
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the connection to the handler (a WebSocket upgrade) and
// tells the listeners, which close it when a drain ends. Each write to it
// must go through within idle, as the response's writes must (sendWatch),
// and the relay ends once it is quiet both ways for the route's
// tunnel_idle.
func (w *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return c, rw, err
	}
	w.conn = c
	w.hijacks.add(c)
	t := &tunnel{Conn: c, idle: w.send.idle, quiet: w.tunnelIdle}
	t.spoke.Store(time.Now().UnixNano())
	return t, rw, nil
}

// tunnel is an upgraded connection, which the proxy reads for the client's
// bytes and writes with the backend's: both directions pass through it.
// Each write fails once it has waited idle, so a client that stops reading
// ends the relay, and frees the backend, rather than holding both as long
// as it keeps the connection. A read fails once neither side has sent
// anything for quiet: a backend still speaking keeps a silent client's
// tunnel, and the client's own bytes keep a silent backend's.
type tunnel struct {
	net.Conn
	idle, quiet time.Duration
	spoke       atomic.Int64 // when a write to the client last went through, in Unix nanoseconds
}

func (c *tunnel) Read(p []byte) (int, error) {
	if c.quiet <= 0 {
		return c.Conn.Read(p)
	}
	from := time.Now()
	for {
		if err := c.SetReadDeadline(from.Add(c.quiet)); err != nil {
			return 0, err
		}
		n, err := c.Conn.Read(p)
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			// A timed-out read leaves a TLS connection whole, so it
			// can go on: quiet counts from the backend's last bytes.
			if spoke := time.Unix(0, c.spoke.Load()); spoke.After(from) {
				from = spoke
				continue
			}
		}
		return n, err
	}
}

func (c *tunnel) Write(p []byte) (int, error) {
	if c.idle > 0 {
		if err := c.SetWriteDeadline(time.Now().Add(c.idle)); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.spoke.Store(time.Now().UnixNano())
	}
	return n, err
}

// CloseWrite passes on the backend's half-close, which the proxy relays
// when the connection has one (TLS and TCP do).
func (c *tunnel) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// admit applies the route's rate limit and shedding, answering a refused
// request itself.
func admit(g *admission.Gate, w http.ResponseWriter, r *http.Request, now time.Time) bool {
	v, ok := g.Admit(now)
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(v.RetryAfter.Seconds())))))
		exchange.Error(w, r, v.Status, v.Reason)
	}
	return ok
}

// admitClient holds one of the client's limits.max_requests_per_client
// slots in *slot for the request, or answers 429: the client's own
// requests must end first.
func (n *Node) admitClient(l config.Limits, w http.ResponseWriter, r *http.Request, x *exchange.Exchange, slot *netip.Prefix) bool {
	if l.MaxRequestsPerClient == 0 || !x.Client.Addr.IsValid() {
		return true // unbounded, or no address to count against
	}
	key, err := n.clients.AcquireIP(x.Client.Addr)
	if err != nil {
		const msg = "too many requests in flight from this client"
		x.Error = msg + " (limits.max_requests_per_client)"
		w.Header().Set("Retry-After", "1")
		exchange.Error(w, r, http.StatusTooManyRequests, msg)
		return false
	}
	*slot = key
	return true
}
