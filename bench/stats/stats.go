// Package stats is the arithmetic benchmark reports share: rounds on
// shared cores scatter, so reports quote medians and list every round.
package stats

import (
	"fmt"
	"slices"
	"strings"
)

// Median is the middle of xs, or the mean of its two middles; xs is left
// as it was.
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Join formats each of xs with format ("%.1f") and joins them with spaces.
func Join(format string, xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, " ")
}
