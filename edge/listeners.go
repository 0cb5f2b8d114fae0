package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"perigee/certs"
	"perigee/connlimit"
	"perigee/edge/config"
	"perigee/edge/metrics"
	"perigee/geo/rtt"
	"perigee/h3serve"
)

// listeners are the node's sockets: HTTPS (TCP for HTTP/1.1 and HTTP/2,
// UDP on the same port for HTTP/3), optional plain HTTP, and admin.
type listeners struct {
	log                    *slog.Logger
	metrics                *metrics.Metrics
	https, plain, adminSrv *http.Server
	h3                     *h3serve.Server
	udp                    net.PacketConn
	tcp                    []net.Listener // closed by close too: a server closed before its Serve ran would leave its listener open
	addrs                  Addrs
	hijacked               hijacks
	limits                 limits
	// altSvc advertises HTTP/3 on the HTTPS listener's TCP responses; the
	// node's handler sets it with its own headers.
	altSvc string
}

// limits bound the connections each listener holds (limits.connections),
// one Limiter per listener: https (TCP), http3 (QUIC), http, admin, and
// acme (its HTTP-01 listener).
type limits struct {
	mu   sync.Mutex // Start adds while a scrape may read
	list []*connlimit.Limiter
}

// limiter makes the limiter of one listener.
func (l *listeners) limiter(name string, s connlimit.Settings) *connlimit.Limiter {
	lim := connlimit.New(name, s, l.log)
	l.limits.mu.Lock()
	defer l.limits.mu.Unlock()
	l.limits.list = append(l.limits.list, lim)
	return lim
}

// setLimits applies a reloaded limits.connections to new connections; the
// ones held stay.
func (l *listeners) setLimits(s connlimit.Settings) {
	for _, lim := range l.limitList() {
		lim.Set(s)
	}
}

func (l *listeners) limitList() []*connlimit.Limiter {
	l.limits.mu.Lock()
	defer l.limits.mu.Unlock()
	return l.limits.list
}

// connMetrics exports each listener's connections held and refused.
func (l *listeners) connMetrics() {
	l.metrics.Gauges("perigee_connections_open", "Client connections a listener holds (https, http3, http, admin, acme), within limits.connections.",
		[]string{"listener"}, func(emit metrics.Emit) {
			for _, lim := range l.limitList() {
				st := lim.Stats()
				emit(float64(st.Open), st.Name)
			}
		})
	l.metrics.Counters("perigee_connections_refused_total", "Client connections a listener refused at once, by the bound of limits.connections that refused them (max_total, max_per_address). A QUIC client's Initial sent again before the refusal reached it counts again.",
		[]string{"listener", "reason"}, func(emit metrics.Emit) {
			for _, lim := range l.limitList() {
				st := lim.Stats()
				emit(float64(st.RefusedTotal), st.Name, "max_total")
				emit(float64(st.RefusedPerAddress), st.Name, "max_per_address")
			}
		})
}

// hijacks are the connections handlers took over (WebSockets) while they
// run. http.Server.Shutdown forgets them, so drain closes them at its
// deadline.
type hijacks struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (h *hijacks) add(c net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns == nil {
		h.conns = map[net.Conn]struct{}{}
	}
	h.conns[c] = struct{}{}
}

func (h *hijacks) remove(c net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns, c)
}

func (h *hijacks) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.conns {
		c.Close()
	}
}

// counted makes c count each handshake it completes, by protocol.
func (l *listeners) counted(c *tls.Config) *tls.Config {
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		l.metrics.Handshake(cs.NegotiatedProtocol)
		return nil
	}
	return c
}

// start binds every configured address and serves h on the traffic
// listeners and adminH on the admin one.
func (l *listeners) start(cfg *config.Config, h, adminH http.Handler, store *certs.Store) error {
	ls, t, conns := cfg.Listen, cfg.Timeouts, cfg.Limits.Connections
	if ls.HTTPS != "" {
		tcp, udp, err := listenSamePort(ls.HTTPS)
		if err != nil {
			return err
		}
		tcp = connlimit.Listen(tcp, l.limiter("https", conns))
		l.udp = udp
		l.tcp = append(l.tcp, tcp)
		l.addrs.HTTPS = tcp.Addr().String()
		_, port, _ := net.SplitHostPort(l.addrs.HTTPS)
		l.altSvc = `h3=":` + port + `"; ma=86400`
		l.https = l.server(t, cfg.Limits, h)
		l.https.TLSConfig = l.counted(store.TLSConfig("h2", "http/1.1"))
		l.https.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			return withAbandons(rtt.ConnContext(ctx, c), func() { c.Close() })
		}
		go l.serve("https", func() error { return l.https.ServeTLS(tcp, "", "") })
		l.h3 = newH3Server(&http3.Server{
			Handler:        h,
			QUICConfig:     &quic.Config{MaxIdleTimeout: t.Idle.D(), Allow0RTT: false},
			MaxHeaderBytes: int(cfg.Limits.MaxHeaderBytes) + 4096,
			IdleTimeout:    t.Idle.D(),
			ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
				l.metrics.HTTP3Conn()
				// ReverseProxy aborts a response whose backend failed
				// mid-body (a panic the server turns into a stream reset)
				// only under a net/http server, which it finds by this key;
				// without it, the client got the body cut short as if whole.
				ctx = context.WithValue(ctx, http.ServerContextKey, l.https)
				return withAbandons(rtt.QUICConnContext(ctx, c), func() {
					c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad), "too many requests abandoned")
				})
			},
		}, http3.ConfigureTLSConfig(l.counted(store.TLSConfig())), t.ReadHeader.D(), h3serve.WithConnLimit(l.limiter("http3", conns)))
		go l.serve("http3", func() error { return l.h3.Serve(udp) })
	}
	if ls.HTTP != "" {
		ln, err := net.Listen("tcp", ls.HTTP)
		if err != nil {
			return fmt.Errorf("listen.http: %w", err)
		}
		ln = connlimit.Listen(ln, l.limiter("http", conns))
		l.tcp = append(l.tcp, ln)
		l.addrs.HTTP = ln.Addr().String()
		l.plain = l.server(t, cfg.Limits, h)
		l.plain.Protocols = new(http.Protocols)
		l.plain.Protocols.SetHTTP1(true)
		l.plain.Protocols.SetUnencryptedHTTP2(true)
		l.plain.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			return withAbandons(ctx, func() { c.Close() })
		}
		go l.serve("http", func() error { return l.plain.Serve(ln) })
	}
	ln, err := net.Listen("tcp", ls.Admin)
	if err != nil {
		return fmt.Errorf("listen.admin: %w", err)
	}
	ln = connlimit.Listen(ln, l.limiter("admin", conns))
	l.tcp = append(l.tcp, ln)
	l.addrs.Admin = ln.Addr().String()
	// Its requests have no body worth waiting for (a reload reads the
	// config from disk), and a connection idle past timeouts.idle goes, as
	// on every other listener; its parser reads as much header as theirs.
	// No WriteTimeout: /debug/pprof/profile refuses a profile longer;
	// each write is bounded instead (writeBound).
	l.adminSrv = &http.Server{Handler: writeBound(adminH, t.Idle.D()), ReadHeaderTimeout: t.ReadHeader.D(), ReadTimeout: t.ReadHeader.D(), IdleTimeout: t.Idle.D(),
		MaxHeaderBytes: int(cfg.Limits.MaxHeaderBytes) + 4096}
	go l.serve("admin", func() error { return l.adminSrv.Serve(ln) })
	return nil
}

func (l *listeners) server(t config.Timeouts, lim config.Limits, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader.D(),
		IdleTimeout:       t.Idle.D(),
		// The handler answers oversized headers with a JSON 431; this hard
		// cap, a little above, protects the parser itself.
		MaxHeaderBytes: int(lim.MaxHeaderBytes) + 4096,
		// An HTTP/2 connection whose client stopped reading it: the stream
		// resets that cut its unread responses (sendWatch) would wait
		// behind the stalled frame writer, and its handlers with them.
		HTTP2:     &http.HTTP2Config{WriteByteTimeout: t.Idle.D(), CountError: l.metrics.HTTP2Error},
		ErrorLog:  slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
		ConnState: clearWriteDeadline,
	}
}

// writeBound fails an answer's write that waits past idle on a client
// that does not read it, which closes the connection and frees its slot.
// Each write gets its own deadline, so an answer that is long in coming
// (a CPU profile writes when it is done) is not cut.
func writeBound(h http.Handler, idle time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bw := &boundedWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: idle}
		bw.refresh()
		h.ServeHTTP(bw, r)
	})
}

type boundedWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (w *boundedWriter) refresh() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.idle)) }

// WriteHeader bounds the head written after the handler returns, when
// nothing follows it.
func (w *boundedWriter) WriteHeader(code int) {
	w.refresh()
	w.ResponseWriter.WriteHeader(code)
}

func (w *boundedWriter) Write(b []byte) (int, error) {
	w.refresh()
	return w.ResponseWriter.Write(b)
}

func (w *boundedWriter) Flush() {
	w.refresh()
	_ = w.rc.Flush()
}

func (w *boundedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// clearWriteDeadline lifts, once an HTTP/1.1 connection's answer is out,
// the write deadline the handler set for its last bytes (sendWatch.tail),
// before the connection waits for, and serves, its next request.
func clearWriteDeadline(c net.Conn, s http.ConnState) {
	if s == http.StateIdle {
		_ = c.SetWriteDeadline(time.Time{})
	}
}

func (l *listeners) serve(name string, run func() error) {
	if err := run(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		l.log.Error("listener stopped", "listener", name, "err", err)
	}
}

// h3Linger bounds how long a drain waits, after the last request, for
// HTTP/3 clients to take their responses and close.
const h3Linger = 500 * time.Millisecond

// drain stops accepting and lets requests in flight finish until ctx
// ends, then closes upgraded connections; HTTP/3 streams opened meanwhile
// are refused (h3serve).
// inFlight counts what is still running.
func (l *listeners) drain(ctx context.Context, inFlight func() int64) error {
	var servers []interface{ Shutdown(context.Context) error }
	for _, s := range []*http.Server{l.https, l.plain} {
		if s != nil {
			servers = append(servers, s)
		}
	}
	if l.h3 != nil {
		servers = append(servers, l.h3)
		// HTTP/3 connections stay open until closed. Once the last handler
		// is done, its response may still sit in QUIC's send buffers: give
		// clients h3Linger to read it before the close cuts what is left.
		go func() {
			for inFlight() > 0 && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
			select {
			case <-time.After(h3Linger):
			case <-ctx.Done():
			}
			l.h3.Close()
		}()
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, s := range servers {
		wg.Go(func() {
			if err := s.Shutdown(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// Upgraded connections may run on until the deadline, then are cut.
	for inFlight() > 0 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	l.hijacked.closeAll()
	l.close()
	return errors.Join(errs...)
}

// close drops every listener and connection at once.
func (l *listeners) close() {
	if l.h3 != nil {
		l.h3.Close()
	}
	if l.udp != nil {
		l.udp.Close()
	}
	for _, s := range []*http.Server{l.https, l.plain, l.adminSrv} {
		if s != nil {
			s.Close()
		}
	}
	for _, ln := range l.tcp {
		ln.Close()
	}
}

// listenSamePort binds TCP and UDP on one port. With port 0 the kernel picks
// the TCP port, which may be taken on UDP: then try another.
func listenSamePort(addr string) (net.Listener, net.PacketConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen.https: %w", err)
	}
	for attempt := 0; ; attempt++ {
		tcp, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen.https (TCP): %w", err)
		}
		_, got, _ := net.SplitHostPort(tcp.Addr().String())
		udp, err := net.ListenPacket("udp", net.JoinHostPort(host, got))
		if err == nil {
			return tcp, udp, nil
		}
		tcp.Close()
		if port != "0" || attempt == 10 {
			return nil, nil, fmt.Errorf("listen.https (UDP for HTTP/3): %w", err)
		}
	}
}
