// Package exchange is the record of one request as it crosses the node: its
// id and trace context, which route and backend served it, and the JSON error
// reply every part of the node uses.
package exchange

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"perigee/geo"
)

// Exchange is carried in the request's context from the listener to the
// access log. It is pooled: nothing may keep it after the request ends.
type Exchange struct {
	ID    string
	Trace Trace
	// Client is the client as the node resolved it, once, as the request
	// arrived (geo.trusted_proxies).
	Client  geo.Client
	Start   time.Time
	Route   string
	Service string
	Backend string
	Retries int
	Status  int    // what the client was sent
	Error   string // why the node answered an error itself, in words (upstream failure, breaker)
	Bytes   int64  // response body bytes written
	// UpstreamTime is how long the backends took to send a response head,
	// or to fail, over every attempt.
	UpstreamTime time.Duration
	// UpstreamError is why the last attempt failed, as a class: see
	// proxy.ErrorClass. Empty when the backend answered.
	UpstreamError string
	// Steered is set when geo steering answered (a redirect, or a proxy to
	// another node): the route's service never saw the request.
	Steered bool
}

type ctxKey struct{}

var pool = sync.Pool{New: func() any { return new(Exchange) }}

// Begin starts the record of a request and returns the context carrying it.
// The caller must End it.
func Begin(r *http.Request, now time.Time) (*Exchange, context.Context) {
	x := pool.Get().(*Exchange)
	*x = Exchange{Start: now, ID: requestID(r.Header.Get("X-Request-Id"))}
	x.Trace = continueTrace(r.Header.Get("Traceparent"))
	return x, context.WithValue(r.Context(), ctxKey{}, x)
}

// End returns the record to the pool.
func End(x *Exchange) { pool.Put(x) }

// From returns the request's record, or nil outside the node's handler.
func From(ctx context.Context) *Exchange {
	x, _ := ctx.Value(ctxKey{}).(*Exchange)
	return x
}

// requestID keeps a sane incoming id, so that ids chain across gateways, and
// makes a new one otherwise.
func requestID(in string) string {
	if n := len(in); n > 0 && n <= 128 {
		ok := true
		for i := 0; i < n && ok; i++ {
			c := in[i]
			ok = c > ' ' && c < 0x7f
		}
		if ok {
			return in
		}
	}
	return randomHex(16)
}

// randomHex returns n hex digits (n ≤ 32, even) from a fast, non-blocking
// source: ids need to be unique, not secret.
func randomHex(n int) string {
	var b [32]byte
	fillHex(b[:n])
	return string(b[:n])
}

// fillHex fills b (at most 32 bytes, even) with random hex digits.
func fillHex(b []byte) {
	var raw [16]byte
	lo, hi := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		raw[i], raw[8+i] = byte(lo>>(8*i)), byte(hi>>(8*i))
	}
	hex.Encode(b, raw[:len(b)/2])
}

// Trace is a W3C trace context: the incoming trace continued, with this
// node's hop as the new parent. Begin makes it; its fields are substrings
// of its header, so that a request's trace costs one allocation.
type Trace struct {
	TraceID string // 32 hex
	SpanID  string // 16 hex: this hop
	Flags   string // 2 hex
	// Continued is false for a new trace: the client sent no valid
	// traceparent, and its tracestate belongs to no trace of ours.
	Continued bool
	header    string // "00-TraceID-SpanID-Flags"
}

// Header is the traceparent sent upstream.
func (t Trace) Header() string { return t.header }

// traceparent is version-traceid-parentid-flags: 2+1+32+1+16+1+2 bytes.
const traceparentLen = 55

func continueTrace(in string) Trace {
	var b [traceparentLen]byte
	copy(b[:], "00-")
	b[35], b[52] = '-', '-'
	continued := len(in) == traceparentLen && in[2] == '-' && in[35] == '-' && in[52] == '-' && in[:2] != "ff" &&
		isHex(in[:2]) && isHex(in[3:35]) && isHex(in[36:52]) && isHex(in[53:]) &&
		in[3:35] != "00000000000000000000000000000000" && in[36:52] != "0000000000000000"
	if continued {
		copy(b[3:35], in[3:35])
		// Only sampled (01) and random (02, Level 2) are defined: the
		// rest must go on as zero. The first hex digit holds none of them.
		b[53], b[54] = '0', "0123"[unhex(in[54])&3]
	} else {
		fillHex(b[3:35])
		copy(b[53:], "01")
	}
	fillHex(b[36:52])
	h := string(b[:])
	return Trace{TraceID: h[3:35], SpanID: h[36:52], Flags: h[53:], Continued: continued, header: h}
}

// unhex is the value of a lower-case hex digit.
func unhex(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Error writes the node's JSON error body, with the request id so a client
// can quote it.
func Error(w http.ResponseWriter, r *http.Request, status int, msg string) {
	id := ""
	if x := From(r.Context()); x != nil {
		id = x.ID
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error     string `json:"error"`
		Status    int    `json:"status"`
		RequestID string `json:"request_id,omitempty"`
	}{msg, status, id})
}
