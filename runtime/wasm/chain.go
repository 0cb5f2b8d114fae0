package wasm

import (
	"errors"
	"net/http"
	"time"
)

// Chain is an ordered list of transforms: their handle_request runs in
// order on the way in, their handle_response in reverse on the way out. A
// guest that answers by itself stops the chain there.
type Chain struct {
	transforms []*Transform
}

// NewChain returns a chain running ts in order.
func NewChain(ts ...*Transform) *Chain { return &Chain{transforms: ts} }

// Transforms lists the chain's transforms in order.
func (c *Chain) Transforms() []*Transform { return c.transforms }

// Then returns a handler that runs the chain around next.
func (c *Chain) Then(next http.Handler) http.Handler {
	if len(c.transforms) == 0 {
		return next
	}
	h := next
	for i := len(c.transforms) - 1; i >= 0; i-- {
		if t := c.transforms[i]; t.abi == ABIProxyWasm {
			h = &proxyLayer{t: t, next: h}
		} else {
			h = &layer{t: t, next: h}
		}
	}
	return &guard{transforms: c.transforms, first: h}
}

// guard holds a reference on every transform of the chain while a request
// runs, so a reload that releases them waits for the request to finish.
type guard struct {
	transforms []*Transform
	first      http.Handler
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for i, t := range g.transforms {
		if !t.Retain() {
			// Only a request that read its chain before a reload and then
			// stalled past the old chain's shutdown lands here.
			for _, held := range g.transforms[:i] {
				held.Release()
			}
			http.Error(w, "transform chain reloaded, retry", http.StatusServiceUnavailable)
			return
		}
	}
	defer func() {
		for _, t := range g.transforms {
			t.Release()
		}
	}()
	g.first.ServeHTTP(w, r)
}

// begin takes an instance for one request, of either ABI; when the pool
// stays busy it answers 503 itself and returns nil.
func (t *Transform) begin(w http.ResponseWriter, r *http.Request) *exchange {
	t.stats.calls.Add(1)
	inst, err := t.acquire(r.Context())
	if err != nil {
		t.stats.busy.Add(1)
		t.stats.errors.Add(1)
		http.Error(w, "transform "+t.spec.Name+" is busy", http.StatusServiceUnavailable)
		return nil
	}
	return newExchange(t, inst, w, r)
}

// layer runs one transform around the rest of the chain.
type layer struct {
	t    *Transform
	next http.Handler
}

func (l *layer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := l.t
	x := t.begin(w, r)
	if x == nil {
		return
	}
	defer x.free()
	inst := x.inst

	start := time.Now()
	x.stack[0] = 0
	if err := x.call(inst.handleRequest, x.stack[:]); err != nil {
		t.stats.time.Observe(time.Since(start))
		l.fail(x, err, "handle_request", true)
		return
	}
	ctxNext := x.stack[0]
	if ctxNext&1 == 0 {
		t.stats.time.Observe(time.Since(start))
		t.stats.answered.Add(1)
		t.put(inst)
		x.answer()
		return
	}
	spent := time.Since(start)
	if t.emptyResponse {
		// handle_response would do nothing: the request is done with the
		// instance, which need not wait for upstream.
		t.stats.time.Observe(spent)
		t.put(inst)
		x.inst = nil
	}

	l.serveNext(x)
	// A held response past max_buffer is dropped: the guest hears of it as
	// an error (is_error 1), and the client gets 502.
	overflowed := x.buf != nil && x.buf.overflowed
	if x.inst != nil {
		isError := uint64(0)
		if overflowed {
			isError = 1
		}
		start = time.Now()
		x.stack[0], x.stack[1] = ctxNext>>32, isError
		err := x.call(inst.handleResponse, x.stack[:])
		t.stats.time.Observe(spent + time.Since(start))
		if err != nil {
			// Unbuffered, the response has gone out already: nothing to undo.
			l.fail(x, err, "handle_response", x.buf != nil)
			return
		}
		t.put(inst)
	}
	switch {
	case overflowed:
		l.tooLarge(x, &overflow{"upstream response", http.StatusBadGateway})
	case x.buf != nil:
		x.buf.flushTo(w, x.respWritten)
	}
}

// serveNext runs the rest of the chain. Should it panic (net/http's way of
// aborting a response), the instance the request holds goes back to the
// pool: the guest is between two calls and sound. A panic because the held
// response ran past max_buffer (httputil.ReverseProxy aborts when a write
// fails) is not passed on: the layer answers 502 instead.
func (l *layer) serveNext(x *exchange) {
	defer func() {
		if p := recover(); p != nil {
			if x.buf != nil && x.buf.overflowed {
				return
			}
			if x.inst != nil {
				l.t.put(x.inst)
			}
			panic(p)
		}
	}()
	l.next.ServeHTTP(x.prepareNext(), x.r)
}

// fail discards the instance after a trap or timeout and, when the response
// has not been sent, answers 500.
func (l *layer) fail(x *exchange, err error, phase string, respond bool) {
	l.t.discard(x.inst)
	if ov := (*overflow)(nil); errors.As(err, &ov) {
		l.tooLarge(x, ov)
		return
	}
	l.t.callFailure(err, phase)
	l.t.stats.errors.Add(1)
	if respond {
		http.Error(x.w, "transform "+l.t.spec.Name+" failed", http.StatusInternalServerError)
	}
}

// tooLarge answers a request whose body or response passed max_buffer,
// with none of the response headers gathered so far.
func (l *layer) tooLarge(x *exchange, ov *overflow) {
	l.t.stats.errors.Add(1)
	l.t.logger.Warn("wasm transform buffer limit exceeded", "what", ov.what,
		"max_buffer", uint64(l.t.spec.MaxBuffer), "status", ov.status, "path", x.r.URL.Path)
	clear(x.w.Header())
	http.Error(x.w, "transform "+l.t.spec.Name+": "+ov.Error(), ov.status)
}
