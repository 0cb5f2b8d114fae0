package mesh

import (
	"fmt"

	"github.com/hashicorp/serf/coordinate"
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
	r := &reader{b: b}
	c := readCoord(r)
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes after coordinate")
	}
	if r.err != nil {
		return nil, r.err
	}
	if c == nil || !c.IsValid() {
		return nil, fmt.Errorf("%w: invalid coordinate", errMalformed)
	}
	return c, nil
}

// readCoord reads an optional coordinate: a zero dimension count means none.
func readCoord(r *reader) *coordinate.Coordinate {
	dims := r.count(coordDims, "coordinate")
	if dims == 0 {
		return nil
	}
	if dims != coordDims {
		r.fail("coordinate dimensionality")
		return nil
	}
	c := &coordinate.Coordinate{Vec: make([]float64, dims)}
	for i := range c.Vec {
		c.Vec[i] = r.f32("coordinate")
	}
	c.Error = r.f32("coordinate error")
	c.Adjustment = r.f32("coordinate adjustment")
	c.Height = r.f32("coordinate height")
	return c
}
