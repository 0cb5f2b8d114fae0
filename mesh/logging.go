package mesh

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"sync"
	"time"
)

// slogWriter turns memberlist's "[LEVEL] memberlist: text" lines into slog
// records at the matching level. memberlist warns of each datagram or
// stream it cannot read, so whoever reaches the gossip port would decide
// how much we log: warnings and errors past logBurst in a logWindow are
// only counted, and the count goes out with the next line let through.
type slogWriter struct {
	log *slog.Logger
	now func() time.Time

	mu         sync.Mutex
	window     time.Time // when the current window began
	lines      int       // warnings and errors logged in it
	suppressed int       // not logged since the last line that was
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
		ok, suppressed := w.allow()
		if !ok {
			return len(p), nil
		}
		if suppressed > 0 {
			attrs = append(attrs, "suppressed_since_last", suppressed)
		}
	}
	w.log.Log(context.Background(), level, string(line), attrs...)
	return len(p), nil
}

// allow reports whether a warning may be logged now, and how many were
// not since the last one that was.
func (w *slogWriter) allow() (ok bool, suppressed int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now := w.now(); now.Sub(w.window) >= logWindow {
		w.window, w.lines = now, 0
	}
	if w.lines >= logBurst {
		w.suppressed++
		return false, 0
	}
	w.lines++
	suppressed, w.suppressed = w.suppressed, 0
	return true, suppressed
}

func memberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(&slogWriter{log: l, now: time.Now}, "", 0)
}

// The log's bound for memberlist's warnings and errors.
const (
	logBurst  = 20
	logWindow = 10 * time.Second
)
