package mesh

import (
	"fmt"
	"math"
	"time"

	"github.com/hashicorp/serf/coordinate"

	"perigee/binread"
)

// coordDims is the Vivaldi dimensionality every node must use: coordinates
// of different sizes cannot be compared, so reports with others are dropped.
const coordDims = 8

func newCoordClient() (*coordinate.Client, error) {
	cfg := coordinate.DefaultConfig()
	cfg.Dimensionality = coordDims
	c, err := coordinate.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("mesh: vivaldi client: %w", err)
	}
	return c, nil
}

// maxCoordSeconds bounds every part of a coordinate from the network.
// Coordinates are in seconds and serf refuses round trips over 10 s, so no
// honest one strays further; one that does would pull ours out with it
// (Vivaldi moves us by the error it sees), and ours travels on.
const maxCoordSeconds = 10

// encodeCoord is the ping ack payload: our coordinate, as in a report.
func encodeCoord(c *coordinate.Coordinate) []byte {
	b := []byte{byte(len(c.Vec))}
	for _, v := range c.Vec {
		b = appendF32(b, v)
	}
	b = appendF32(b, c.Error)
	b = appendF32(b, c.Adjustment)
	return appendF32(b, c.Height)
}

func decodeCoord(b []byte) (*coordinate.Coordinate, error) {
	r := binread.New(b, errMalformed)
	c := readCoord(r)
	r.End()
	if r.Err() != nil {
		return nil, r.Err()
	}
	if c == nil || !c.IsValid() {
		return nil, fmt.Errorf("%w: invalid coordinate", errMalformed)
	}
	return c, nil
}

// readCoord reads an optional coordinate: a zero dimension count means none.
func readCoord(r *binread.Reader) *coordinate.Coordinate {
	dims := r.Count(4, coordDims, "coordinate")
	if dims == 0 {
		return nil
	}
	if dims != coordDims {
		r.Fail("coordinate dimensionality")
		return nil
	}
	c := &coordinate.Coordinate{Vec: make([]float64, dims)}
	for i := range c.Vec {
		c.Vec[i] = finite32(r, "coordinate")
	}
	c.Error = finite32(r, "coordinate error")
	c.Adjustment = finite32(r, "coordinate adjustment")
	c.Height = finite32(r, "coordinate height")
	if r.Err() != nil {
		return nil
	}
	if !plausibleCoord(c) {
		r.Failf("coordinate out of range: %v", c)
		return nil
	}
	return c
}

// plausibleCoord says whether every part of c is within maxCoordSeconds,
// what we take from the network.
func plausibleCoord(c *coordinate.Coordinate) bool {
	plausible := c.Error >= 0 && c.Height >= 0 && max(c.Error, math.Abs(c.Adjustment), c.Height) <= maxCoordSeconds
	for _, v := range c.Vec {
		plausible = plausible && math.Abs(v) <= maxCoordSeconds
	}
	return plausible
}

// updateCoord moves our coordinate by a ping of node that took rtt, unless
// that would take ours out of what peers take: a peer's coordinate within
// the bounds can still lie (every part at the bound, an error of 0 that
// gives it the whole weight), and six of its acks pushed ours past them,
// after which every peer refused our reports and showed us stale. Only
// the prober calls it, one ping at a time, so nothing moves ours between
// the update and its undoing.
func (c *Cluster) updateCoord(node string, other *coordinate.Coordinate, rtt time.Duration) error {
	before := c.coords.GetCoordinate()
	after, err := c.coords.Update(node, other, rtt)
	if err != nil {
		return err
	}
	if !plausibleCoord(after) {
		if err := c.coords.SetCoordinate(before); err != nil {
			return err
		}
		return fmt.Errorf("the update would take our coordinate out of range: %v", after)
	}
	return nil
}

// RTT estimates the round trip to a node from Vivaldi coordinates.
func (c *Cluster) RTT(nodeID string) (time.Duration, bool) {
	if nodeID == c.meta.ID {
		return 0, true
	}
	c.mu.Lock()
	p := c.peers[nodeID]
	var other *coordinate.Coordinate
	if p != nil {
		other = p.coord
	}
	c.mu.Unlock()
	if other == nil || len(other.Vec) != coordDims {
		return 0, false
	}
	d := c.coords.GetCoordinate().DistanceTo(other)
	if d < 0 || math.IsNaN(float64(d)) {
		return 0, false
	}
	return d, true
}
