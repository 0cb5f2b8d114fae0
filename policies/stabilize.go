package policies

import (
	"fmt"
	"time"

	"perigee/policies/actuator"
)

// stabilizer keeps one service's replica count from flapping, the way
// Kubernetes' HPA `behavior` does: it scales down only to the highest
// recommendation of the down window, up only to the lowest of the up
// window, and by no more per period than the rates allow. It lives with
// the service's scaler, so a policy reload keeps its windows.
type stabilizer struct {
	b       actuator.Behavior
	high    extreme // max over the down window
	low     extreme // min over the up window
	changes []change
}

type change struct {
	at    time.Time
	delta int
}

func newStabilizer(b actuator.Behavior) *stabilizer {
	b = b.WithDefaults()
	return &stabilizer{b: b, high: extreme{sign: 1}, low: extreme{sign: -1}}
}

// recommend records rec, a recommendation at now, and returns the count to
// ask for from current, with a note when it differs from rec.
func (s *stabilizer) recommend(now time.Time, current, rec int) (int, string) {
	downTo := s.high.add(now, rec, s.b.DownWindow.D())
	upTo := s.low.add(now, rec, s.b.UpWindow.D())
	n := current
	switch {
	case upTo > current:
		n = upTo
	case downTo < current:
		n = downTo
	}
	var note string
	if n != rec && n == current {
		if rec < current {
			note = fmt.Sprintf("held at %d: highest recommendation in the %v scale-down window", n, s.b.DownWindow.D())
		} else {
			note = fmt.Sprintf("held at %d: lowest recommendation in the %v scale-up window", n, s.b.UpWindow.D())
		}
	} else if n != rec {
		note = fmt.Sprintf("%d: stabilised within the scale windows", n)
	}
	if lim := s.limit(now, current, n); lim != n {
		n = lim
		if n > current {
			note = fmt.Sprintf("rate limited to +%d per %v", n-current, s.b.Up.Period.D())
		} else {
			note = fmt.Sprintf("rate limited to -%d per %v", current-n, s.b.Down.Period.D())
		}
	}
	return n, note
}

// limit caps the move from current to n by the rate of its direction,
// counting the changes already made within the period.
func (s *stabilizer) limit(now time.Time, current, n int) int {
	if n == current {
		return n
	}
	sign, r := 1, s.b.Up
	if n < current {
		sign, r = -1, s.b.Down
	}
	moved := 0
	for _, c := range s.changes {
		if !c.at.Before(now.Add(-r.Period.D())) && c.delta*sign > 0 {
			moved += c.delta
		}
	}
	start := current - moved
	step := max(r.Pods, start*r.Percent/100, 1) // a percent of none is none: one may always move

	if sign > 0 {
		return min(n, max(current, start+step))
	}
	return max(n, min(current, start-step))
}

// changed records that the count moved from current to n at now.
func (s *stabilizer) changed(now time.Time, current, n int) {
	keep := max(s.b.Up.Period.D(), s.b.Down.Period.D())
	i := 0
	for i < len(s.changes) && s.changes[i].at.Before(now.Add(-keep)) {
		i++
	}
	s.changes = s.changes[i:]
	if n != current && current >= 0 {
		s.changes = append(s.changes, change{now, n - current})
	}
}

// extreme is the maximum (sign 1) or minimum (sign -1) of the values added
// within a sliding window. It keeps only the values that can still be the
// extreme, in order, so the oldest it keeps is the answer; and at most one
// per extremeSlots-th of the window, so it stays small however often it is
// fed.
type extreme struct {
	sign int
	at   []time.Time // when a value leaves the window, less the window
	from []time.Time // when it was first added
	v    []int
}

const extremeSlots = 512

func (q *extreme) add(now time.Time, v int, window time.Duration) int {
	if window <= 0 {
		q.at, q.from, q.v = q.at[:0], q.from[:0], q.v[:0]
		return v
	}
	for n := len(q.v); n > 0 && q.sign*q.v[n-1] <= q.sign*v; n-- {
		q.at, q.from, q.v = q.at[:n-1], q.from[:n-1], q.v[:n-1]
	}
	if n := len(q.v); n > 0 && now.Sub(q.from[n-1]) < window/extremeSlots {
		// The newest kept value beats v and came within the same slot: it
		// stands for both, held until v would leave, which errs towards
		// holding by at most a slot.
		q.at[n-1] = now
	} else {
		q.at, q.from, q.v = append(q.at, now), append(q.from, now), append(q.v, v)
	}
	i := 0
	for q.at[i].Before(now.Add(-window)) {
		i++
	}
	q.at, q.from, q.v = q.at[i:], q.from[i:], q.v[i:]
	return q.v[0]
}
