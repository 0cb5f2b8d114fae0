// Package lograte bounds how many lines a source the node does not control
// (a guest, a child process, whoever reaches the gossip port or the ingest
// endpoint) puts in the node's log: a flood of them would cost the CPU to
// format them, the disk, and the node's own lines in a log that drops
// past its bound (logsink). Past the bound lines are counted, and the next
// line let through says how many went unlogged, under one key for every
// source: dropped_before.
package lograte

import (
	"sync"
	"time"
)

// Limit lets through at most burst lines in each window. The zero Limit
// lets none through: make one with New.
type Limit struct {
	burst  int
	window time.Duration

	mu      sync.Mutex
	start   time.Time // when the current window began
	n       int       // lines let through in it
	dropped int       // held back since the last line let through
}

// New is a Limit of burst lines a window.
func New(burst int, window time.Duration) *Limit {
	return &Limit{burst: burst, window: window}
}

// Allow reports whether a line may go out at now and, when it may, the
// attributes it must carry: dropped_before, how many were held back since
// the last line that went out, or none when none were.
func (l *Limit) Allow(now time.Time) (ok bool, attrs []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.start.IsZero() || now.Sub(l.start) >= l.window {
		l.start, l.n = now, 0
	}
	if l.n >= l.burst {
		l.dropped++
		return false, nil
	}
	l.n++
	dropped := l.dropped
	l.dropped = 0
	if dropped == 0 {
		return true, nil
	}
	return true, []any{"dropped_before", dropped}
}
