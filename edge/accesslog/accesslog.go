// Package accesslog writes one structured line per request: every error,
// and a configured share of the rest, so a busy node logs what matters
// without logging everything.
package accesslog

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"perigee/edge/exchange"
)

// Logger writes access records; a nil Logger writes nothing.
type Logger struct {
	log    *slog.Logger
	sample float64
}

// New logs to log, keeping a `sample` share (0..1) of successful requests.
func New(log *slog.Logger, sample float64) *Logger { return &Logger{log: log, sample: sample} }

// Log writes the record of one finished request if it is sampled.
func (l *Logger) Log(r *http.Request, x *exchange.Exchange, took time.Duration) {
	if l == nil || (x.Status < 500 && (l.sample <= 0 || (l.sample < 1 && rand.Float64() >= l.sample))) {
		return
	}
	l.log.LogAttrs(context.Background(), slog.LevelInfo, "access",
		slog.String("request_id", x.ID),
		slog.String("trace_id", x.Trace.TraceID),
		slog.String("client", client(r, x)),
		slog.String("peer", r.RemoteAddr),
		slog.String("proto", r.Proto),
		slog.String("method", r.Method),
		slog.String("user_agent", r.UserAgent()),
		slog.String("host", r.Host),
		slog.String("path", r.URL.Path),
		slog.String("route", x.Route),
		slog.String("service", x.Service),
		slog.String("backend", x.Backend),
		slog.Int("retries", x.Retries),
		slog.Int("status", x.Status),
		slog.Int64("request_bytes", max(r.ContentLength, 0)), // as declared; 0 for none or chunked
		slog.Int64("bytes", x.Bytes),
		slog.String("error", x.Error),
		slog.Float64("duration_ms", float64(took.Microseconds())/1000),
		slog.Float64("upstream_ms", float64(x.UpstreamTime.Microseconds())/1000),
		slog.String("upstream_error", x.UpstreamError),
	)
}

// client is the address the node resolved, or the peer's when it could not
// read one.
func client(r *http.Request, x *exchange.Exchange) string {
	if x.Client.Addr.IsValid() {
		return x.Client.Addr.String()
	}
	return r.RemoteAddr
}
