package geo

import (
	"math"
	"time"
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

// mapRTT is the round trip the map predicts over a distance.
func (c *RouterConfig) mapRTT(km float64) time.Duration {
	return c.BaseRTT + time.Duration(km/c.KmPerMs*float64(time.Millisecond))
}

// blend weighs a measured RTT against the map's guess by how many samples
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
