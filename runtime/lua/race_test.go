//go:build race

package lua

// The race detector multiplies memory use, so RSS bounds are not checked
// under it.
const raceEnabled = true
