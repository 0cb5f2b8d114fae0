package wasm

import (
	"context"
	"log/slog"
	"time"

	"perigee/lograte"
)

// A guest's log lines are outside input: within one call's deadline a guest
// can write gigabytes. Every way a guest logs (http-wasm's log, proxy-wasm's
// proxy_log, WASI stdout and stderr) goes through one guestLog per
// transform, which cuts each record's text and lets through at most
// guestLogBurst records a second; the next record that gets through says
// how many were dropped.
const (
	guestLogBurst   = 100
	maxGuestLogText = 4 << 10
)

type guestLog struct {
	logger *slog.Logger
	limit  *lograte.Limit
}

func newGuestLog(l *slog.Logger) *guestLog {
	return &guestLog{logger: l, limit: lograte.New(guestLogBurst, time.Second)}
}

func (g *guestLog) log(ctx context.Context, lvl slog.Level, msg string, text []byte) {
	if !g.logger.Enabled(ctx, lvl) {
		return
	}
	ok, dropped := g.limit.Allow(time.Now())
	if !ok {
		return
	}

	attrs := make([]any, 0, 4+len(dropped))
	if len(text) > maxGuestLogText {
		attrs = append(attrs, "text", string(text[:maxGuestLogText]), "cut_bytes", len(text)-maxGuestLogText)
	} else {
		attrs = append(attrs, "text", string(text))
	}
	attrs = append(attrs, dropped...)
	g.logger.Log(ctx, lvl, msg, attrs...)
}

// output is a guest's stdout or stderr: a write a record. One fd_write may
// carry millions of vectors, each a Write; past the call's deadline they
// fail, which ends the fd_write.
type output struct {
	g     *guestLog
	level slog.Level
	call  *callCtx
}

func (o output) Write(p []byte) (int, error) {
	if err := o.call.Err(); err != nil {
		return 0, err
	}
	o.g.log(context.Background(), o.level, "wasm guest output", p)
	return len(p), nil
}
