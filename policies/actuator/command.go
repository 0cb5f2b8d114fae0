package actuator

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"perigee/lograte"
)

// splitCommand splits a command line into words the way a shell does for
// plain words, single and double quotes and backslash escapes, without any
// expansion: the actuators run programs directly, never through a shell.
func splitCommand(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\' && quote != '\'':
			escaped, inWord = true, true
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 || escaped {
		return nil, fmt.Errorf("command %q: unterminated quote or escape", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) == 0 {
		return nil, errors.New("empty command")
	}
	return words, nil
}

// childLogBurst is how many lines a second one instance's output may put
// in the node's log: a child is the operator's program, and one printing
// in a tight loop would fill the log and push the node's own lines out.
const childLogBurst = 100

// maxChildLine cuts a line a child never ends.
const maxChildLine = 4096

// lineLog writes a child's output to the log one line at a time, at most
// childLogBurst a second; the next line let through carries how many were
// not (dropped_before).
type lineLog struct {
	log   *slog.Logger
	limit *lograte.Limit
	mu    sync.Mutex
	buf   []byte
}

func newLineLog(log *slog.Logger) *lineLog {
	return &lineLog{log: log, limit: lograte.New(childLogBurst, time.Second)}
}

func (l *lineLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.line(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > maxChildLine {
		l.line(l.buf)
		l.buf = l.buf[:0]
	}
	return len(b), nil
}

func (l *lineLog) line(b []byte) {
	if ok, dropped := l.limit.Allow(time.Now()); ok {
		l.log.Info(string(b), dropped...)
	}
}

// tail keeps the last bytes a command wrote, for error messages.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailBytes = 2048

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > tailBytes {
		t.buf = t.buf[len(t.buf)-tailBytes:]
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
