package mesh

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"time"

	"perigee/lograte"
)

// slogWriter turns memberlist's "[LEVEL] memberlist: text" lines into slog
// records at the matching level. memberlist warns of each datagram or
// stream it cannot read, so whoever reaches the gossip port would decide
// how much we log: warnings and errors past logBurst in a logWindow are
// only counted, and the count goes out with the next line let through.
type slogWriter struct {
	log   *slog.Logger
	now   func() time.Time
	limit *lograte.Limit // of warnings and errors
}

var logLevels = []struct {
	prefix string
	level  slog.Level
}{
	{"[DEBUG] ", slog.LevelDebug},
	{"[INFO] ", slog.LevelInfo},
	{"[WARN] ", slog.LevelWarn},
	{"[ERR] ", slog.LevelError},
	{"[ERROR] ", slog.LevelError},
}

func (w *slogWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, l := range logLevels {
		if bytes.HasPrefix(line, []byte(l.prefix)) {
			level, line = l.level, line[len(l.prefix):]
			break
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	if !w.log.Enabled(context.Background(), level) {
		return len(p), nil
	}
	attrs := []any{"component", "memberlist"}
	if level >= slog.LevelWarn {
		ok, dropped := w.limit.Allow(w.now())
		if !ok {
			return len(p), nil
		}
		attrs = append(attrs, dropped...)
	}
	w.log.Log(context.Background(), level, string(line), attrs...)
	return len(p), nil
}

func newSlogWriter(l *slog.Logger, now func() time.Time) *slogWriter {
	return &slogWriter{log: l, now: now, limit: lograte.New(logBurst, logWindow)}
}

func memberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(newSlogWriter(l, time.Now), "", 0)
}

// The log's bound for memberlist's warnings and errors.
const (
	logBurst  = 20
	logWindow = 10 * time.Second
)
