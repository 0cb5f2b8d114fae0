package edge

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"perigee/edge/admission"
	"perigee/edge/exchange"
	"perigee/edge/metrics"
	"perigee/geo"
)

// ServeHTTP is the request path of every listener: match a route, check the
// limits, hand the request to the route's chain, record the outcome.
func (n *Node) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := n.acquire()
	defer st.release()
	x, ctx := exchange.Begin(r, start)
	r = r.WithContext(ctx)
	rec := recorders.Get().(*recorder)
	rec.ResponseWriter, rec.x = w, x
	w.Header().Set("X-Request-Id", x.ID)

	var entry *routeEntry
	var stats *metrics.ServiceStats
	if n.fleet.nodesAPI == nil || r.URL.Path != geo.NodesPath {
		if entry, _ = st.routes.Match(r.Host, r.Method, r.URL.Path); entry != nil {
			x.Route, x.Service, stats = entry.name, entry.service.Name, entry.stats
		}
	}
	n.metrics.Begin(stats)
	// Deferred, because a response cut mid-body (http.ErrAbortHandler)
	// unwinds by panic and must still leave the in-flight counts.
	defer func() {
		took := time.Since(start)
		if x.Status == 0 {
			x.Status = http.StatusOK // the handler wrote nothing
		}
		n.metrics.Done(stats, x.Route, x.Service, r.Proto, x.Status, took)
		n.metrics.Retried(x.Service, x.Retries)
		st.access.Log(r, x, took)
		rec.ResponseWriter, rec.x = nil, nil
		recorders.Put(rec)
		exchange.End(x)
	}()
	switch {
	case headerBytes(r) > int(st.cfg.Limits.MaxHeaderBytes):
		exchange.Error(rec, r, http.StatusRequestHeaderFieldsTooLarge, "request headers too large")
	case entry == nil && n.fleet.nodesAPI != nil && r.URL.Path == geo.NodesPath:
		n.fleet.nodesAPI.ServeHTTP(rec, r)
	case entry == nil:
		exchange.Error(rec, r, http.StatusNotFound, "no route for "+r.Host+r.URL.Path)
	case st.cfg.Limits.MaxBodyBytes > 0 && r.ContentLength > int64(st.cfg.Limits.MaxBodyBytes):
		exchange.Error(rec, r, http.StatusRequestEntityTooLarge, "request body too large")
	case !admit(entry.gate, rec, r, start):
	default:
		if n.fleet.country != nil {
			n.fleet.country.tag(r)
		}
		if max := int64(st.cfg.Limits.MaxBodyBytes); max > 0 && r.Body != nil {
			r.Body = http.MaxBytesReader(rec, r.Body, max)
		}
		entry.handler.ServeHTTP(rec, r)
	}

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
	x *exchange.Exchange
}

var recorders = sync.Pool{New: func() any { return new(recorder) }}

var _ http.Flusher = (*recorder)(nil)

func (w *recorder) WriteHeader(code int) {
	if w.x.Status == 0 || code >= 200 && w.x.Status < 200 {
		w.x.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.x.Status == 0 {
		w.x.Status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.x.Bytes += int64(n)
	return n, err
}

func (w *recorder) Flush() {
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

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
