// Package clip shortens text that came from outside the node (a CA's
// error answer, a script's error, an actuator's failure) to a bound
// before it is kept or logged, and says how much was left out. It
// imports nothing of ours, so every part may use it.
package clip

import (
	"fmt"
	"strings"
)

// Text is s when it holds at most limit bytes; otherwise its start, cut
// at a rune, and how many bytes more there were, all within limit bytes.
func Text(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	// The note's length with len(s) in it is at least its final length.
	keep := max(0, limit-len(fmt.Sprintf("… (%d bytes more)", len(s))))
	start := strings.ToValidUTF8(s[:keep], "") // a rune cut in two
	return start + fmt.Sprintf("… (%d bytes more)", len(s)-len(start))
}
