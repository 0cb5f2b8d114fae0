package samplebackend

import (
	"bytes"
	"testing"
)

// A body ends in a newline, in lines a terminal shows whole, and is exactly
// the size asked for.
func TestFillerEndsInANewline(t *testing.T) {
	for _, n := range []int{1, 64, 65, 512} {
		b := filler(n)
		if len(b) != n || b[n-1] != '\n' {
			t.Fatalf("filler(%d) = %q", n, b)
		}
		for _, line := range bytes.Split(b[:n-1], []byte("\n")) {
			if len(line) > 64 {
				t.Fatalf("filler(%d): a line of %d bytes", n, len(line))
			}
		}
	}
	if len(filler(0)) != 0 {
		t.Fatal("filler(0) is not empty")
	}
}
