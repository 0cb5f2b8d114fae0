package via

import (
	"net/http"
	"strings"
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

// A node id the loop guard cannot find in the Via it writes ("fra 1",
// "fra,1") turned the guard and the admin API's refusal of proxied
// requests off: CheckNode refuses it, and every id it accepts is found.
func TestNodeIDsAreFoundInTheirVia(t *testing.T) {
	for _, id := range []string{"fra 1", "fra,1", "fra(1)", "", "fra\r\n1", strings.Repeat("a", 65)} {
		if CheckNode(id) == nil {
			t.Errorf("CheckNode(%q) accepted it", id)
		}
	}
	for _, id := range []string{"fra-1", "eu.fra_1", "local", strings.Repeat("a", 64)} {
		if err := CheckNode(id); err != nil {
			t.Errorf("CheckNode(%q): %v", id, err)
		}
		for _, proto := range []string{"1.1", "2", "3"} {
			if !PassedThrough(http.Header{"Via": {"1.1 cdn, " + proto + " " + id}}, id) {
				t.Errorf("PassedThrough does not find %q in the Via it writes over %s", id, proto)
			}
		}
	}
}

// Via's received-protocol is the version the request or response came
// with (RFC 9110 7.6.3): an HTTP/1.0 client's request is not 1.1.
func TestViaNamesTheVersionReceived(t *testing.T) {
	for _, c := range []struct {
		major, minor int
		want         string
	}{{1, 0, "1.0"}, {1, 1, "1.1"}, {2, 0, "2"}, {3, 0, "3"}} {
		if got := Hop(c.major, c.minor, "fra-1"); got != c.want+" fra-1" {
			t.Errorf("HTTP/%d.%d: Via says %q, want %q", c.major, c.minor, got, c.want)
		}
	}
}
