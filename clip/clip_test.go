package clip

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestText(t *testing.T) {
	if got := Text("short", 10); got != "short" {
		t.Errorf("a text within the bound changed: %q", got)
	}
	if got := Text("0123456789", 10); got != "0123456789" {
		t.Errorf("a text at the bound changed: %q", got)
	}
	long := strings.Repeat("é", 1000) // 2000 bytes, runes of 2
	for _, limit := range []int{1, 20, 21, 22, 100, 1999} {
		got := Text(long, limit)
		if len(got) > limit && limit >= len("… (2000 bytes more)") || !utf8.ValidString(got) || !strings.HasSuffix(got, " bytes more)") {
			t.Errorf("limit %d: %d bytes, %q", limit, len(got), got)
		}
	}
	if got := Text(strings.Repeat("x", 100), 50); got != strings.Repeat("x", 30)+"… (70 bytes more)" {
		t.Errorf("got %q", got)
	}
}
