package proxy

import (
	"net/http"
	"testing"
)

func TestPassedThrough(t *testing.T) {
	for _, c := range []struct {
		vias []string
		want bool
	}{
		{[]string{"1.1 fra-1"}, true},
		{[]string{"2 lhr-1, 1.1 fra-1 (perigee)"}, true},
		{[]string{"1.1 lhr-1", "3   fra-1"}, true},
		{[]string{"1.1 fra-10"}, false},
		{[]string{"1.1 lhr-1, HTTP/1.1 fra-1x"}, false},
		{[]string{"fra-1"}, false}, // a received-by needs its protocol before it
		{[]string{""}, false},
	} {
		if got := PassedThrough(http.Header{"Via": c.vias}, "fra-1"); got != c.want {
			t.Errorf("PassedThrough(%q): %v, want %v", c.vias, got, c.want)
		}
	}
}
