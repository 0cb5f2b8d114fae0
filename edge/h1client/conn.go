package h1client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// conn is one upstream connection. Only the goroutine that holds it (the
// request in flight, or the pool) touches its fields.
type conn struct {
	nc     net.Conn
	pool   *pool
	reused bool // taken from the pool rather than dialled for this request

	// br is set while a response is being read; idle connections hand it
	// back to readers, so an idle pool holds no buffers.
	br *bufio.Reader
	// inHead is set while the response head is read; head holds it.
	inHead bool
	head   *[]byte
	// fields is writeRequest's list of the request's header fields, reused.
	fields []field
	// werr is the first error writing to nc, told apart from a body read error.
	werr error
	// sent counts the bytes of this request that nc accepted.
	sent int64
	// wres is what writing the request returned. A request with a body is
	// written by its own goroutine (writeAside), which owns werr, sent,
	// wres, wdl and fields until it closes writing; nil: no write running.
	wres    error
	writing chan struct{}
	// answered: a byte of the response arrived while the request was
	// still being written.
	answered bool

	// The exchange's timeouts, and the deadlines set on nc (zero: none).
	tm       Timeouts
	headBy   time.Time // the response head is due
	rdl, wdl time.Time

	idleSince time.Time // when it was last pooled
	// abort closes nc, for a context that ends an exchange: made once, so
	// that an exchange's context.AfterFunc costs no closure.
	abort func()

	// alive's non-blocking read of an idle socket.
	raw      syscall.RawConn // nil when nc is not a socket
	probeFn  func(uintptr) bool
	probeBuf [1]byte
	probeErr error
}

func newConn(nc net.Conn, p *pool) *conn {
	c := &conn{nc: nc, pool: p, abort: func() { nc.Close() }}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw, c.probeFn = raw, c.probe
		}
	}
	return c
}

// Read is what br reads from: nc, within the exchange's deadlines. Each
// read may wait Read from its start, and no longer than headBy while the
// head is read.
//
// Moving a socket's deadline is a runtime timer operation, so the one set
// stays while it comes no later than this read's (an earlier read's, or
// an earlier exchange's) and has not passed; if it expires first, it is
// moved to this read's and the read goes on. A read that times out
// returns no bytes, so nothing is lost.
func (c *conn) Read(p []byte) (int, error) {
	if c.writing != nil {
		if n, err, writing := c.readWriting(p); writing {
			return n, err
		}
	}
	now := time.Now()
	due, head := c.readDue(now)
	if moves(c.rdl, due, now) {
		c.setRead(due)
	}
	for {
		n, err := c.nc.Read(p)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		if !due.IsZero() && !time.Now().Before(due) {
			if head {
				return n, &timeoutError{"no response head within", c.tm.ResponseHeader}
			}
			return n, &timeoutError{"backend sent nothing for", c.tm.Read}
		}
		c.setRead(due) // an earlier deadline than this read's expired
	}
}

// errWriteFailed is what a read returns when the request's write failed
// before any of the response came: the exchange judges the write's error.
var errWriteFailed = errors.New("h1client: the request's write failed")

// readWriting reads while the request is still being written, with no
// deadline of ours: a backend may read a long upload before it answers,
// and the write's own timeouts bound that. The writer ends by expiring
// the read deadline (writeAside); then writing is false, and the read
// goes on under the exchange's deadlines.
func (c *conn) readWriting(p []byte) (n int, err error, writing bool) {
	n, err = c.nc.Read(p)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		c.answered = c.answered || n > 0
		return n, err, true
	}
	c.wrote()
	if c.wres != nil && !c.answered {
		return 0, errWriteFailed, true
	}
	if c.inHead && c.tm.ResponseHeader > 0 {
		c.headBy = time.Now().Add(c.tm.ResponseHeader)
	}
	return 0, nil, false
}

// writeAside writes req from a goroutine of its own, so that the response
// is read meanwhile: a backend may answer (413, 401) before it read the
// whole body, and then read no more of it.
func (c *conn) writeAside(req *http.Request) {
	if !c.rdl.IsZero() {
		c.setRead(time.Time{}) // now, before the writer may expire it
	}
	done := make(chan struct{})
	c.writing = done
	go func() {
		c.wres = c.write(req)
		c.nc.SetReadDeadline(aLongTimeAgo) // wakes a read waiting for the answer
		close(done)
	}()
}

var aLongTimeAgo = time.Unix(1, 0)

// wrote waits for the request's write to end.
func (c *conn) wrote() {
	if c.writing != nil {
		<-c.writing
		c.writing = nil
		c.setRead(time.Time{}) // clears the writer's wake-up
	}
}

// writeDone reports whether the request's write has ended, waiting for it
// a little: a backend that read the whole body may answer before the
// writer goroutine has returned. net/http.Transport waits as long.
func (c *conn) writeDone() bool {
	if c.writing == nil {
		return true
	}
	select {
	case <-c.writing:
	default:
		t := time.NewTimer(writeWait)
		defer t.Stop()
		select {
		case <-c.writing:
		case <-t.C:
			return false // still sending to a backend that answered early
		}
	}
	c.wrote()
	return true
}

const writeWait = 50 * time.Millisecond

// readDue is the deadline of a read starting at now (zero: none), and
// whether it is the head's.
func (c *conn) readDue(now time.Time) (due time.Time, head bool) {
	if c.tm.Read > 0 {
		due = now.Add(c.tm.Read)
	}
	if c.inHead && !c.headBy.IsZero() && (due.IsZero() || c.headBy.Before(due)) {
		return c.headBy, true
	}
	return due, false
}

// moves reports whether a deadline set on the socket must move to due
// before an operation starting at now: it would come later, or it has
// passed. With no due, one left from before is cleared when it expires.
func moves(set, due, now time.Time) bool {
	return !due.IsZero() && (set.IsZero() || set.After(due) || !set.After(now))
}

func (c *conn) setRead(d time.Time) {
	c.nc.SetReadDeadline(d)
	c.rdl = d
}

func (c *conn) setWrite(d time.Time) {
	c.nc.SetWriteDeadline(d)
	c.wdl = d
}

// Write is what the request's bufio.Writer writes to. Each write may wait
// Write from its start; its deadline moves as a read's does (see Read),
// and a write cut by an earlier deadline goes on with what it had left.
func (c *conn) Write(p []byte) (int, error) {
	now := time.Now()
	var due time.Time
	if c.tm.Write > 0 {
		due = now.Add(c.tm.Write)
	}
	if moves(c.wdl, due, now) {
		c.setWrite(due)
	}
	written := 0
	for {
		n, err := c.nc.Write(p[written:])
		written += n
		c.sent += int64(n)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if due.IsZero() || time.Now().Before(due) {
				c.setWrite(due) // an earlier deadline than this write's expired
				continue
			}
			err = &timeoutError{"backend took nothing for", c.tm.Write}
		}
		if err != nil && c.werr == nil {
			c.werr = err
		}
		return written, err
	}
}

// write sends req through a pooled bufio.Writer.
func (c *conn) write(req *http.Request) error {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(c)
	var err error
	if writable(req) {
		err = c.writeRequest(bw, req)
	} else {
		err = writeStd(bw, req)
	}
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writers.Put(bw)
	body, isBody := err.(errBodyRead)
	switch {
	case isBody:
		return fmt.Errorf("h1client: reading request body: %w", body.err)
	case c.werr != nil:
		// Request.Write may hide it as it hides a body's error.
		return fmt.Errorf("h1client: writing request: %w", c.werr)
	case err != nil:
		return fmt.Errorf("h1client: writing request: %w", err)
	}
	return nil
}

// writeStd writes what writeRequest does not with Request.Write.
func writeStd(bw *bufio.Writer, req *http.Request) error {
	var rb *recordingBody
	if hasBody(req) {
		// req.Write hides a body read error behind an unexported type;
		// recording it keeps errors.As working (*http.MaxBytesError).
		rb = &recordingBody{ReadCloser: req.Body}
		r2 := *req
		r2.Body = rb
		req = &r2
	}
	err := req.Write(bw)
	if rb != nil && rb.err != nil {
		return errBodyRead{rb.err}
	}
	return err
}

type recordingBody struct {
	io.ReadCloser
	err error
}

func (r *recordingBody) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// release ends a response: c goes back to the pool if keep holds and the
// context did not close it, and is closed otherwise.
func (c *conn) release(keep bool, stop func() bool) {
	if stop != nil && !stop() {
		keep = false // the context fired and closed c
	}
	// A request still being written, or whose write failed, ends its
	// connection; and so do bytes nobody asked for: out of sync.
	if !keep || !c.writeDone() || c.wres != nil || c.br.Buffered() > 0 {
		c.nc.Close()
		return
	}
	c.br.Reset(nil)
	readers.Put(c.br)
	c.br, c.werr = nil, nil
	c.pool.put(c)
}

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
	heads   = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}
)

// maxPooledHead is the largest head record kept for reuse.
const maxPooledHead = 64 << 10

func getReader(c *conn) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(c)
	return br
}

// body streams a response body, framed as its head says, and releases
// its connection at EOF, or closes it on error or an early Close.
type body struct {
	c    *conn
	ctx  context.Context
	t    *Transport
	stop func() bool
	keep bool
	resp *http.Response // whose Trailer a chunked body's trailer section fills

	src     io.Reader // c.br, &lr, or a chunked reader over c.br
	lr      io.LimitedReader
	chunked bool
	end     error // io.EOF once read to the end, or the error that ended it

	mu       sync.Mutex
	closed   bool // Close was called
	released bool // c was pooled or closed
}

// frame sets resp's body and the fields that describe it from h, as
// net/http.ReadResponse does (RFC 9112 6.3).
func (b *body) frame(h *head, req *http.Request) error {
	resp := b.resp
	code := resp.StatusCode
	noBody := req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	conn := resp.Header["Connection"]
	if resp.ProtoMinor == 0 {
		resp.Close = hasToken(conn, "close") || !hasToken(conn, "keep-alive")
	} else {
		resp.Close = hasToken(conn, "close")
	}
	if h.chunked {
		resp.TransferEncoding = []string{"chunked"}
		if err := declaredTrailer(resp); err != nil {
			return err
		}
	}
	switch {
	case req.Method == http.MethodHead:
		resp.ContentLength = h.cl
	case noBody:
		resp.ContentLength = 0
	case h.chunked:
		resp.ContentLength = -1
	default:
		resp.ContentLength = h.cl
	}
	switch {
	case noBody || resp.ContentLength == 0:
		resp.Body = http.NoBody
		return nil
	case h.chunked:
		b.src, b.chunked = httputil.NewChunkedReader(b.c.br), true
	case h.cl > 0:
		b.lr = io.LimitedReader{R: b.c.br, N: h.cl}
		b.src = &b.lr
	default: // until the backend closes
		resp.Close = true
		b.src = b.c.br
	}
	resp.Body = b
	return nil
}

var errBodyClosed = errors.New("h1client: read on closed response body")

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return 0, errBodyClosed
	}
	if b.end != nil {
		return 0, b.end
	}
	n, err := b.src.Read(p)
	switch {
	case b.src != &b.lr:
	case err == nil && b.lr.N == 0:
		err = io.EOF // with the last bytes: the connection goes back sooner
	case err == io.EOF && b.lr.N > 0:
		err = io.ErrUnexpectedEOF
	}
	if err == io.EOF && b.chunked {
		if terr := readTrailer(b.c.br, b.resp, b.t.opts.MaxResponseHeaderBytes); terr != nil {
			err = terr
		}
	}
	switch {
	case err == io.EOF:
		b.end = err
		b.finish(b.keep)
	case err != nil:
		b.finish(false)
		err = b.t.mapErr(b.ctx, err)
		b.end = err
	}
	return n, err
}

// Close does not drain what is left: closing the connection costs less
// than reading a body nobody wants.
func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.finish(false)
	return nil
}

func (b *body) finish(keep bool) {
	b.mu.Lock()
	done := b.released
	b.released = true
	b.mu.Unlock()
	if done {
		return
	}
	if !keep {
		// Not c.release: a Read may still be using c.br, so it is left
		// to the garbage collector rather than pooled.
		if b.stop != nil {
			b.stop()
		}
		b.c.nc.Close()
		return
	}
	b.c.release(true, b.stop)
}

// pool holds one backend's idle connections, most recently used last.
// One timer per pool closes those unused for IdleTimeout, armed for the
// oldest's expiry while any is idle, rather than a timer per connection:
// resetting and stopping one on every exchange woke the runtime's poller,
// and with it an idle thread, on about one exchange in three
// (docs/benchmarks.md).
type pool struct {
	t    *Transport
	addr string

	mu      sync.Mutex
	idle    []*conn // by idleSince, so the expired ones lead
	sweep   *time.Timer
	armed   bool      // sweep will run
	used    time.Time // when a connection was last pooled
	dropped bool      // no longer the Transport's pool for addr
}

func (t *Transport) pool(addr string) *pool {
	if p := (*t.pools.Load())[addr]; p != nil {
		return p
	}
	t.poolsMu.Lock()
	defer t.poolsMu.Unlock()
	old := *t.pools.Load()
	if p := old[addr]; p != nil {
		return p
	}
	// A pool unused for IdleTimeout, with nothing idle, goes rather than
	// stay for every address ever used: discovery may name new ones at
	// each answer.
	now := time.Now()
	m := make(map[string]*pool, len(old)+1)
	for k, v := range old {
		if v.keep(now) {
			m[k] = v
		}
	}
	p := &pool{t: t, addr: addr}
	m[addr] = p
	t.pools.Store(&m)
	return p
}

// get returns the warmest idle connection that is still alive, or nil.
// Those that are not go: the peer closed them, or sent what nobody asked.
func (p *pool) get() *conn {
	for {
		c := p.pop()
		if c == nil || c.alive() {
			return c
		}
		c.nc.Close()
	}
}

func (p *pool) pop() *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	c.reused = true
	return c
}

// keep reports whether p holds idle connections or pooled one within
// IdleTimeout, and marks it dropped if not.
func (p *pool) keep(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropped = len(p.idle) == 0 && now.Sub(p.used) >= p.t.opts.IdleTimeout
	return !p.dropped
}

// put pools c, in its address's current pool if p was dropped while c
// was in use.
func (p *pool) put(c *conn) {
	if p.add(c) {
		return
	}
	c.pool = p.t.pool(p.addr)
	if !c.pool.add(c) {
		c.nc.Close() // dropped again at once: addresses churn
	}
}

// add pools c, or closes it when the pool is full; false if p was dropped.
func (p *pool) add(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dropped {
		return false
	}
	if len(p.idle) >= p.t.opts.MaxIdlePerHost {
		c.nc.Close()
		return true
	}
	c.idleSince = time.Now() // under p.mu, so that idle stays in order
	p.used = c.idleSince
	p.idle = append(p.idle, c)
	if !p.armed {
		p.arm(p.t.opts.IdleTimeout)
	}
	return true
}

func (p *pool) arm(d time.Duration) {
	p.armed = true
	if p.sweep == nil {
		p.sweep = time.AfterFunc(d, p.expire)
	} else {
		p.sweep.Reset(d)
	}
}

// expire closes the connections unused for IdleTimeout, and arms the
// sweep again for the oldest of the rest.
func (p *pool) expire() {
	p.mu.Lock()
	now := time.Now()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleSince) >= p.t.opts.IdleTimeout {
		n++
	}
	expired := slices.Clone(p.idle[:n])
	p.idle = slices.Delete(p.idle, 0, n)
	p.armed = false
	if len(p.idle) > 0 {
		p.arm(p.idle[0].idleSince.Add(p.t.opts.IdleTimeout).Sub(now))
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.nc.Close()
	}
}

func (p *pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if p.armed && p.sweep.Stop() {
		p.armed = false
	}
	p.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
}
