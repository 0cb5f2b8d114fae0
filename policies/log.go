package policies

import (
	"sync"

	"perigee/telemetry"
)

// decisionLog keeps the last decisions in a ring.
type decisionLog struct {
	mu   sync.Mutex
	ring []telemetry.Decision
	next int
	full bool
}

func newDecisionLog(size int) *decisionLog {
	return &decisionLog{ring: make([]telemetry.Decision, size)}
}

func (l *decisionLog) add(d telemetry.Decision) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = d
	l.next = (l.next + 1) % len(l.ring)
	if l.next == 0 {
		l.full = true
	}
}

// last returns up to n decisions, oldest first.
func (l *decisionLog) last(n int) []telemetry.Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	size := l.next
	if l.full {
		size = len(l.ring)
	}
	n = min(max(n, 0), size)
	out := make([]telemetry.Decision, n)
	for i := range n {
		out[i] = l.ring[(l.next-n+i+len(l.ring))%len(l.ring)]
	}
	return out
}
