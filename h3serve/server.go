// Package h3serve serves HTTP/3 through quic-go's http3 with a deadline on
// each request stream's header read, which http3.Server has no hook for.
package h3serve

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"perigee/connlimit"
)

// Server serves HTTP/3 through quic-go's http3, but accepts each
// connection's request streams itself, so that it can put a deadline on a
// stream's header read: http3.Server reads a request's HEADERS frame with
// none and has no hook for one, so a stream that never finishes its
// headers would be held as long as the client keeps the connection alive.
// Past readHeader such a stream is reset with H3_REQUEST_INCOMPLETE; the
// connection and its other streams go on.
//
// The price of the raw connections: quic-go sends GOAWAY only from its own
// accept loop. A drain here refuses new streams with H3_REQUEST_REJECTED,
// which tells the client the request was not processed and may be retried,
// lets the requests in flight finish, and then closes each connection with
// H3_NO_ERROR.
type Server struct {
	srv        *http3.Server // the settings and the handler; never serves itself
	tls        *tls.Config   // ALPN h3, from http3.ConfigureTLSConfig
	readHeader time.Duration
	write      time.Duration      // zero: no bound
	limit      *connlimit.Limiter // nil: no bound

	mu       sync.Mutex
	tr       *quic.Transport
	ln       *quic.EarlyListener
	conns    map[*http3.RawServerConn]struct{}
	draining bool
	closed   bool
	served   sync.WaitGroup // one per connection being served
	streams  sync.Map       // *quic.Conn → *connStreams, while it is served

	work chan streamJob // to an idle worker; unbuffered
	quit chan struct{}  // closed by Close: idle workers exit
}

// A streamJob is one request stream for a worker to serve.
type streamJob struct {
	hc      *http3.RawServerConn
	str     *quic.Stream
	streams *connStreams
	done    *sync.WaitGroup // the connection's requests in flight
}

// maxHeaderReads bounds a connection's request streams whose headers are
// being read. quic-go reads a header block into memory, up to
// MaxHeaderBytes, and a connection may open 100 streams at once: without
// a bound one connection could make the server hold 100 header blocks,
// sent but for their last bytes, until the header deadline (over HTTP/2 a
// connection sends one header block at a time). Streams past the bound
// wait in quic-go, their bytes within the connection's flow-control
// window; an honest client's headers come whole, and free their slot at
// once.
const maxHeaderReads = 8

// connStreams are one connection's request streams being served, by id:
// quic-go's request body names its stream only by id, and the handler
// may look at its own (EndedWithHeaders). reading holds a slot for each
// stream whose headers are being read.
type connStreams struct {
	reading chan struct{}
	mu      sync.Mutex
	m       map[quic.StreamID]*servedStream
}

type servedStream struct {
	str     *quic.Stream
	reading bool // holds a slot of reading
}

type connStreamsKey struct{}

func newConnStreams() *connStreams {
	return &connStreams{reading: make(chan struct{}, maxHeaderReads), m: map[quic.StreamID]*servedStream{}}
}

func (cs *connStreams) add(str *quic.Stream) {
	cs.mu.Lock()
	cs.m[str.StreamID()] = &servedStream{str: str, reading: true}
	cs.mu.Unlock()
}

// headersRead frees the slot of stream id, once.
func (cs *connStreams) headersRead(id quic.StreamID) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if st := cs.m[id]; st != nil && st.reading {
		st.reading = false
		<-cs.reading
	}
}

func (cs *connStreams) remove(str *quic.Stream) {
	cs.headersRead(str.StreamID()) // if quic-go refused the headers
	cs.mu.Lock()
	delete(cs.m, str.StreamID())
	cs.mu.Unlock()
}

// served is the stream id of r, served by a Server, and its connection's
// streams; nil if r is not.
func served(r *http.Request) (*connStreams, quic.StreamID) {
	cs, _ := r.Context().Value(connStreamsKey{}).(*connStreams)
	body := r.Body
	if f, ok := body.(*trailerFill); ok {
		body = f.ReadCloser
	}
	b, _ := body.(interface{ StreamID() quic.StreamID })
	if cs == nil || b == nil {
		return nil, 0
	}
	return cs, b.StreamID()
}

// EndedWithHeaders reports whether r, served by a Server, had its stream
// ended, with nothing after its HEADERS frame, by the time the handler
// runs. quic-go gives every request a body, since a stream's end is known
// only by reading it; Peek, with a deadline already past, looks without
// consuming anything or waiting.
func EndedWithHeaders(r *http.Request) bool {
	cs, id := served(r)
	if cs == nil {
		return false
	}
	cs.mu.Lock()
	st := cs.m[id]
	cs.mu.Unlock()
	if st == nil {
		return false
	}
	str := st.str
	var one [1]byte
	_ = str.SetReadDeadline(time.Now())
	_, err := str.Peek(one[:])
	_ = str.SetReadDeadline(time.Time{})
	return err == io.EOF
}

// workerIdle is how long a request stream's goroutine waits for the
// next stream before it exits.
const workerIdle = 2 * time.Second

// An Option changes how a Server serves.
type Option func(*Server)

// WithConnLimit bounds the QUIC connections the server holds by l. A new
// connection over a bound is refused before its handshake with QUIC's
// CONNECTION_REFUSED, by quic-go (Transport.ConnContext), and holds no
// state; its slot is freed when it closes or its handshake fails. While
// the server or the client's address holds half its bound, a new
// connection must first prove its source address with a Retry
// (Transport.VerifySourceAddress), which costs the server no state, so
// that spoofed Initial packets cannot take what is left.
func WithConnLimit(l *connlimit.Limiter) Option {
	return func(s *Server) { s.limit = l }
}

// WithWriteTimeout bounds each response's writing, from its request's
// headers, as net/http's Server.WriteTimeout does: past d its writes
// fail, those quic-go makes after the handler returns too, and its stream
// is reset. Without a bound, a client that grants no flow-control credit
// holds the handler, and then the stream, as long as it keeps its
// connection alive; a stream being written keeps quic-go's idle timeout
// from closing the connection.
func WithWriteTimeout(d time.Duration) Option {
	return func(s *Server) { s.write = d }
}

// New serves srv's handler with srv's settings (not its TLSConfig: tlsConf,
// which must offer ALPN h3, as http3.ConfigureTLSConfig makes it), and
// resets a request stream that has not sent its headers within readHeader;
// zero is no deadline.
func New(srv *http3.Server, tlsConf *tls.Config, readHeader time.Duration, opts ...Option) *Server {
	s := &Server{srv: srv, tls: tlsConf, readHeader: readHeader, conns: map[*http3.RawServerConn]struct{}{},
		work: make(chan streamJob), quit: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	connContext := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c *quic.Conn) context.Context {
		if cs, ok := s.streams.Load(c); ok { // stored by serveConn
			ctx = context.WithValue(ctx, connStreamsKey{}, cs)
		}
		if connContext != nil {
			ctx = connContext(ctx, c)
		}
		return ctx
	}
	next := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cs, id := served(r); cs != nil {
			cs.headersRead(id)
		}
		if d, ok := w.(deadlines); ok {
			if readHeader > 0 {
				// The headers are in: the body's reads are the handler's to bound.
				_ = d.SetReadDeadline(time.Time{})
			}
			if s.write > 0 {
				_ = d.SetWriteDeadline(time.Now().Add(s.write))
			}
		}
		if len(r.Trailer) > 0 {
			r.Body = &trailerFill{ReadCloser: r.Body, r: r, declared: r.Trailer}
		}
		next.ServeHTTP(w, r)
	})
	return s
}

// deadlines are those of quic-go's response writer, its stream's.
type deadlines interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// trailerFill puts the values of a request's declared trailers into the
// map r.Trailer held when the handler began, as net/http's servers do, once
// the body ends. quic-go puts them in a new map on its own request instead,
// which the copies a handler makes of r (WithContext) never see: a proxy
// would announce the trailers and send none of their values.
type trailerFill struct {
	io.ReadCloser
	r        *http.Request
	declared http.Header // shared by every copy of r
}

func (b *trailerFill) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		for k := range b.declared {
			if v, ok := b.r.Trailer[k]; ok {
				b.declared[k] = v
			}
		}
	}
	return n, err
}

// Serve accepts QUIC connections on udp until Close.
func (s *Server) Serve(udp net.PacketConn) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.tr = &quic.Transport{Conn: udp}
	if s.limit != nil {
		s.tr.ConnContext = s.acquire
		s.tr.VerifySourceAddress = s.limit.Crowded
	}
	ln, err := s.tr.ListenEarly(s.tls, s.srv.QUICConfig)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.ln = ln
	s.mu.Unlock()
	for {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			s.mu.Lock()
			closed := s.closed || s.draining
			s.mu.Unlock()
			if closed {
				return http.ErrServerClosed
			}
			return err
		}
		s.mu.Lock()
		if s.closed || s.draining {
			s.mu.Unlock()
			conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
			return http.ErrServerClosed
		}
		s.served.Add(1) // under mu: Shutdown's Wait comes after any Add
		s.mu.Unlock()
		go s.serveConn(conn)
	}
}

// acquire counts a new connection against the limit until its context,
// which quic-go cancels when the connection closes or its handshake
// fails, ends; an error refuses it with CONNECTION_REFUSED.
func (s *Server) acquire(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	release, err := s.limit.Acquire(info.RemoteAddr)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, release)
	return ctx, nil
}

func (s *Server) serveConn(conn *quic.Conn) {
	defer s.served.Done()
	// Stored before NewRawServerConn, whose ConnContext puts it in the
	// connection's context, and gone with the connection however it ends.
	streams := newConnStreams()
	s.streams.Store(conn, streams)
	defer s.streams.Delete(conn)
	hc, err := s.srv.NewRawServerConn(conn)
	if err != nil {
		conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeInternalError), "")
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		hc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		return
	}
	s.conns[hc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, hc)
		s.mu.Unlock()
	}()
	go func() {
		for {
			str, err := conn.AcceptUniStream(context.Background())
			if err != nil {
				return
			}
			go s.serveUnidirectional(hc, str)
		}
	}()
	var requests sync.WaitGroup
	defer requests.Wait()
	for {
		select {
		case streams.reading <- struct{}{}: // the worker's headersRead or remove frees it
		case <-conn.Context().Done():
			return
		}
		str, err := conn.AcceptStream(context.Background())
		if err != nil {
			return // the connection is closed, by either side
		}
		s.mu.Lock()
		draining := s.draining
		s.mu.Unlock()
		if draining {
			<-streams.reading
			str.ReleaseStreamCredit()
			str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestRejected))
			str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestRejected))
			continue
		}
		if s.readHeader > 0 {
			_ = str.SetReadDeadline(time.Now().Add(s.readHeader))
		}
		requests.Add(1)
		s.handle(streamJob{hc, str, streams, &requests})
	}
}

// serveUnidirectional hands str to quic-go once its stream type is in,
// then reads and drops what is left of it. quic-go reads the type with no
// deadline, and until it comes the stream holds one of the connection's
// unidirectional stream slots and this goroutine: a stream whose type has
// not come within readHeader has its reading stopped with
// H3_STREAM_CREATION_ERROR instead. quic-go returns at once from a QPACK
// encoder or decoder stream, and reads nothing of it (it uses no dynamic
// table), but leaves it open: what the peer sent on it would stay in the
// connection's receive window (768 KiB), unread, until the connection
// closed. On the other streams quic-go returns once it has read or
// cancelled all there is, and the read ends at once.
func (s *Server) serveUnidirectional(hc *http3.RawServerConn, str *quic.ReceiveStream) {
	if !awaitStreamType(str, s.readHeader) {
		str.CancelRead(quic.StreamErrorCode(http3.ErrCodeStreamCreationError))
		return
	}
	hc.HandleUnidirectionalStream(str)
	_, _ = io.Copy(io.Discard, str)
}

// awaitStreamType waits up to d (zero: no bound) for the variable-length
// integer that starts str, its stream type, without consuming it, and
// says false if d ran out first. An end or a reset of the stream is
// quic-go's to see.
func awaitStreamType(str *quic.ReceiveStream, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	_ = str.SetReadDeadline(time.Now().Add(d))
	defer str.SetReadDeadline(time.Time{}) // a control stream is read for as long as its connection lives
	var typ [8]byte
	_, err := str.Peek(typ[:1])
	if err == nil {
		_, err = str.Peek(typ[:1<<(typ[0]>>6)]) // the top two bits give the integer's length
	}
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}

// handle serves a request stream on an idle worker, or on a new one. A
// new goroutine starts with a small stack (the average the last GC
// scanned), and a request's handler chain (quic-go's stream handling,
// the proxy, the upstream client) grows it by copying, several times
// over; a worker kept between requests has grown it already (until a GC
// shrinks an idle one). Over HTTP/1.1 the connection's goroutine is kept
// the same way.
func (s *Server) handle(j streamJob) {
	select {
	case s.work <- j:
	default:
		go s.worker(j)
	}
}

// worker serves j, then the streams handle gives it, until it has waited
// workerIdle for one or the server is closed.
func (s *Server) worker(j streamJob) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		j.streams.add(j.str)
		j.hc.HandleRequestStream(j.str)
		j.streams.remove(j.str)
		j.done.Done()
		idle.Reset(workerIdle)
		select {
		case j = <-s.work:
		case <-idle.C:
			return
		case <-s.quit:
			return
		}
	}
}

// Shutdown stops accepting connections and new streams, and waits for the
// connections to close (Close closes them) or for ctx, when it closes
// them itself.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.served.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.mu.Lock()
	tr := s.tr
	defer func() {
		s.mu.Unlock()
		// A listener's Close leaves the Transport made for it open. This
		// leaves the PacketConn, which is the caller's, open.
		if tr != nil {
			tr.Close()
		}
	}()
	if !s.closed {
		close(s.quit)
	}
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	for hc := range s.conns {
		hc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
	}
	return nil
}
