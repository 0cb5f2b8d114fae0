package mesh

import (
	"math"
	"time"

	"perigee/telemetry"
)

// significant says whether a new sample differs enough from the last one
// sent to be worth gossiping before the refresh is due. Small jitter is
// held back: every report costs every node bandwidth.
func significant(old, cur telemetry.NodeSample) bool {
	if moved(old.RPS, cur.RPS, 1) || moved(float64(old.InFlight), float64(cur.InFlight), 2) || moved(old.CPU, cur.CPU, 0.05) {
		return true
	}
	if len(old.Services) != len(cur.Services) {
		return true
	}
	for name, o := range old.Services {
		n, ok := cur.Services[name]
		if !ok || o.Backends != n.Backends || o.HealthyBackends != n.HealthyBackends {
			return true
		}
		if moved(o.RPS, n.RPS, 1) || moved(o.ErrorRate, n.ErrorRate, 0.01) || moved(float64(o.InFlight+o.Queued), float64(n.InFlight+n.Queued), 2) {
			return true
		}
		p99 := func(s telemetry.ServiceSample) float64 { return float64(s.Latency.Quantile(0.99)) }
		if moved(p99(o), p99(n), float64(time.Millisecond)) {
			return true
		}
	}
	return false
}

// moved is true when v changed by more than 10% of old and more than floor.
func moved(old, cur, floor float64) bool { return movedBy(old, cur, floor, 0.1) }

// movedBy is moved with share instead of 10%.
func movedBy(old, cur, floor, share float64) bool {
	return math.Abs(cur-old) > max(floor, share*math.Abs(old))
}
