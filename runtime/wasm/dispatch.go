package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// Dispatcher sends the HTTP calls proxy-wasm filters dispatch
// (proxy_http_call) to a service, through the node's upstream pools. The
// request's URL has no host: the service's balancer picks the backend.
type Dispatcher interface {
	Dispatch(ctx context.Context, service string, req *http.Request) (*http.Response, error)
}

// Bounds on dispatched calls.
const (
	// maxCallsPerRequest is how many calls one request's filter (or one
	// root callback) may dispatch in all, its calls' callbacks included;
	// Envoy has no such bound, a gateway needs one.
	maxCallsPerRequest = 16
	// maxCallTimeout caps the timeout a filter asks for; 0 gets it too.
	maxCallTimeout = 30 * time.Second
)

// httpCall is one dispatched call; done is closed when resp or err is set.
type httpCall struct {
	id      uint32
	done    chan struct{}
	status  int
	headers [][2]string
	body    []byte
	err     error
}

const (
	bufferCallResponseBody = 4
	mapCallHeaders         = 6
	mapCallTrailers        = 7
)

func (p proxyABI) dispatch(ctx context.Context, mod api.Module, stack []uint64) {
	x := proxyExchange(ctx)
	if x == nil || p.t == nil {
		stack[0] = statusBadArgument
		return
	}
	cluster, ok1 := readString(mod, stack[0], stack[1])
	hdr, ok2 := mod.Memory().Read(uint32(stack[2]), uint32(stack[3]))
	body, ok3 := mod.Memory().Read(uint32(stack[4]), uint32(stack[5]))
	idOut := uint32(stack[9])
	if !ok1 || !ok2 || !ok3 {
		stack[0] = statusInvalidMemory
		return
	}
	// The call's headers and body are held until it is answered.
	if uint64(len(hdr))+uint64(len(body)) > uint64(p.t.spec.MaxBuffer) {
		stack[0] = statusBadArgument
		return
	}
	service, known := p.t.spec.Clusters[cluster]
	pairs, err := decodePairs(hdr)
	if !known || err != nil || p.t.host.dispatcher == nil {
		stack[0] = statusBadArgument
		return
	}
	// Counted over the request, not over the calls outstanding: each
	// callback may dispatch the next, one at a time without end.
	if x.pw.nextCall >= maxCallsPerRequest {
		stack[0] = statusInternalFailure
		return
	}
	timeout := time.Duration(uint32(stack[8])) * time.Millisecond
	if timeout <= 0 || timeout > maxCallTimeout {
		timeout = maxCallTimeout
	}
	req, err := callRequest(pairs, body)
	if err != nil {
		stack[0] = statusBadArgument
		return
	}
	x.pw.nextCall++
	c := &httpCall{id: x.pw.nextCall, done: make(chan struct{})}
	if !mod.Memory().WriteUint32Le(idOut, c.id) {
		stack[0] = statusInvalidMemory
		return
	}
	x.pw.calls = append(x.pw.calls, c)
	go c.run(p.t.host.dispatcher, service, req, timeout, uint64(p.t.spec.MaxBuffer))
	stack[0] = statusOK
}

// callRequest builds the call from its pseudo-headers (:method, :path,
// :authority) and headers, as Envoy's async client does.
func callRequest(pairs [][2]string, body []byte) (*http.Request, error) {
	method, path, authority := http.MethodGet, "/", ""
	h := http.Header{}
	for _, kv := range pairs {
		switch strings.ToLower(kv[0]) {
		case ":method":
			method = kv[1]
		case ":path":
			path = kv[1]
		case ":authority":
			authority = kv[1]
		default:
			if !strings.HasPrefix(kv[0], ":") && validHeader(strings.ToLower(kv[0]), kv[1]) {
				h.Add(kv[0], kv[1])
			}
		}
	}
	if !validHost(authority) {
		return nil, errors.New("invalid :authority")
	}
	req, err := http.NewRequest(method, "/", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	// A request target, as a client's or a guest's set_uri is: NewRequest
	// would take "x", which HTTP/2 transports refuse, and read "//a/b"
	// as host a.
	if err := setRequestURI(req, path); err != nil {
		return nil, fmt.Errorf("invalid :path: %w", err)
	}
	req.RequestURI = "" // a client's request
	req.Header, req.Host = h, authority
	return req, nil
}

func (c *httpCall) run(d Dispatcher, service string, req *http.Request, timeout time.Duration, limit uint64) {
	defer close(c.done)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := d.Dispatch(ctx, service, req.WithContext(ctx))
	if err != nil {
		c.err = err
		return
	}
	defer resp.Body.Close()
	c.body, c.err = io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	if uint64(len(c.body)) > limit {
		c.body, c.err = nil, errCallTooLarge
	}
	c.status = resp.StatusCode
	c.headers = append(c.headers, [2]string{":status", strconv.Itoa(resp.StatusCode)})
	for k, vs := range resp.Header {
		for _, v := range vs {
			c.headers = append(c.headers, [2]string{strings.ToLower(k), v})
		}
	}
}

var errCallTooLarge = &overflow{"dispatched call's response", http.StatusBadGateway}

// deliverCalls waits for the request's outstanding calls, each within its
// timeout, and runs proxy_on_http_call_response for each in the order
// they complete; it stops early once the filter resumed the stream or
// answered. A failed call is delivered with no headers, as Envoy does.
func (x *exchange) deliverCalls(g *proxyGuest, untilResumed bool) error {
	x.pw.resumed = false
	for len(x.pw.calls) > 0 && !(untilResumed && x.pw.resumed) && x.pw.local == nil {
		c := x.pw.calls[0]
		if err := x.waitCall(c); err != nil {
			return err
		}
		x.pw.calls = x.pw.calls[1:]
		x.pw.call = c
		if c.err != nil {
			x.t.logger.Warn("proxy-wasm dispatched call failed", "err", c.err)
		}
		_, err := x.callback(g.callResponse, uint64(g.rootID), uint64(c.id), uint64(len(c.headers)), uint64(len(c.body)), 0)
		x.pw.call = nil
		if err != nil {
			return err
		}
	}
	return nil
}

var errClientGone = errors.New("the client went away while a dispatched call was outstanding")

var errShutDown = errors.New("the transform shut down while a root context's call was outstanding")

// waitCall waits for a call within its own timeout, and no longer than the
// client waits for its request; a root context's call (from a tick, outside
// any request) no longer than the transform runs.
func (x *exchange) waitCall(c *httpCall) error {
	gone := x.t.stopped.Done()
	err := errShutDown
	if x.r != nil {
		gone, err = x.r.Context().Done(), errClientGone
	}
	select {
	case <-c.done:
		return nil
	case <-gone:
		return err
	}
}
