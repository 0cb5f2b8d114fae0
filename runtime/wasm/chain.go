package wasm

import (
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
		h = &layer{t: c.transforms[i], next: h}
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

// layer runs one transform around the rest of the chain.
type layer struct {
	t    *Transform
	next http.Handler
}

func (l *layer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := l.t
	t.stats.calls.Add(1)
	inst, err := t.acquire(r.Context())
	if err != nil {
		t.stats.busy.Add(1)
		t.stats.errors.Add(1)
		http.Error(w, "transform "+t.spec.Name+" is busy", http.StatusServiceUnavailable)
		return
	}
	x := newExchange(t, inst, w, r)
	defer x.free()

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

	l.serveNext(x)

	start = time.Now()
	x.stack[0], x.stack[1] = ctxNext>>32, 0
	err = x.call(inst.handleResponse, x.stack[:])
	t.stats.time.Observe(spent + time.Since(start))
	if err != nil {
		// Unbuffered, the response has gone out already: nothing to undo.
		l.fail(x, err, "handle_response", x.buf != nil)
		return
	}
	t.put(inst)
	if x.buf != nil {
		x.buf.flushTo(w, x.respWritten)
	}
}

// serveNext runs the rest of the chain. Should it panic (net/http's way of
// aborting a response), the instance goes back to the pool: the guest is
// between two calls and sound.
func (l *layer) serveNext(x *exchange) {
	defer func() {
		if p := recover(); p != nil {
			l.t.put(x.inst)
			panic(p)
		}
	}()
	l.next.ServeHTTP(x.prepareNext(), x.r)
}

// fail discards the instance after a trap or timeout and, when the response
// has not been sent, answers 500.
func (l *layer) fail(x *exchange, err error, phase string, respond bool) {
	l.t.callFailure(err, phase)
	l.t.stats.errors.Add(1)
	l.t.discard(x.inst)
	if respond {
		http.Error(x.w, "transform "+l.t.spec.Name+" failed", http.StatusInternalServerError)
	}
}
