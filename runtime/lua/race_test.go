//go:build race

package lua

// The race detector multiplies memory use, so RSS bounds are not checked
// under it, and slows code several times, so the hostile corpus gets a
// longer deadline.
const (
	raceEnabled  = true
	raceSlowdown = 4
)
