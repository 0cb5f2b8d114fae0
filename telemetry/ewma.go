package telemetry

import (
	"math"
	"sync"
	"time"
)

// EWMA is an exponentially weighted moving average whose weight decays with
// time rather than with the number of samples, so bursts and quiet spells are
// both read correctly. It is safe for concurrent use.
type EWMA struct {
	tau   time.Duration
	mu    sync.Mutex
	value float64
	last  time.Time
}

// NewEWMA returns an average with the given decay time constant: after tau
// without samples, an old value keeps 1/e of its weight.
func NewEWMA(tau time.Duration) *EWMA { return &EWMA{tau: tau} }

// Update folds in one sample taken at now.
func (e *EWMA) Update(v float64, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.last.IsZero() {
		e.value, e.last = v, now
		return
	}
	w := decay(now.Sub(e.last), e.tau)
	e.value = e.value*w + v*(1-w)
	if now.After(e.last) {
		e.last = now
	}
}

// Value is the current average.
func (e *EWMA) Value() float64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.value
}

// decay is the weight an old value keeps after dt.
func decay(dt, tau time.Duration) float64 {
	switch {
	case tau <= 0:
		return 0 // no memory: the latest sample is the value
	case dt <= 0:
		return 0.5 // two samples at one instant count evenly
	}
	return math.Exp(-float64(dt) / float64(tau))
}
