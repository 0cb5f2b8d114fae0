package geo

import (
	"math"
	"time"

	"perigee/geo/latency"
)

const earthRadiusKm = 6371.0

// distanceKm is the great-circle distance by the haversine formula.
func distanceKm(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	dLat := (lat2 - lat1) * rad
	dLon := (lon2 - lon1) * rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) +
		math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadiusKm * math.Asin(math.Sqrt(min(1, a)))
}

// modelRTT is the round trip the latency model predicts between two places:
// the measured median between their metros, plus each one's last mile at
// KmPerMs, plus BaseRTT for access networks and stacks.
func (rt *Router) modelRTT(a, b latency.Place) time.Duration {
	ms := rt.cfg.Matrix.BetweenMs(a, b) + (a.AccessKm+b.AccessKm)/rt.cfg.KmPerMs
	return rt.cfg.BaseRTT + time.Duration(ms*float64(time.Millisecond))
}

// nodePlace is where the model puts a node, cached by its coordinates: a
// node is a data centre, so its position is taken as exact.
func (rt *Router) nodePlace(n Node) latency.Place {
	if math.IsNaN(n.Lat) || math.IsNaN(n.Lon) {
		// A NaN key is never found in a map again, nor deleted from it:
		// cached, each decision would add one.
		return rt.cfg.Matrix.Place(n.Lat, n.Lon, 0)
	}
	key := [2]float64{n.Lat, n.Lon}
	if p, ok := rt.places.Get(key); ok {
		return p
	}
	p := rt.cfg.Matrix.Place(n.Lat, n.Lon, 0)
	rt.places.Put(key, p)
	return p
}

// blend weighs a measured RTT against the model's guess by how many samples
// back it: with PriorSamples samples the two count equally.
func (c *RouterConfig) blend(model, measured time.Duration, samples int) time.Duration {
	w := float64(samples) / (float64(samples) + c.PriorSamples)
	return time.Duration(w*float64(measured) + (1-w)*float64(model))
}

// loadPenalty is the expected queueing delay at a node, growing as
// utilisation u/(1-u) like an M/M/1 queue, and whether the node is too full
// to take more clients.
func (c *RouterConfig) loadPenalty(n Node) (time.Duration, bool) {
	if n.Capacity <= 0 {
		return 0, false
	}
	u := float64(max(n.InFlight, 0)) / float64(n.Capacity)
	if u >= c.MaxUtilization {
		return 0, true
	}
	return time.Duration(float64(c.QueueUnit) * u / (1 - u)), false
}

// margin is how much better another node must be before a client network
// that already has an answer is moved.
func (c *RouterConfig) margin(best time.Duration) time.Duration {
	return max(c.MarginMin, time.Duration(float64(best)*c.Margin))
}
