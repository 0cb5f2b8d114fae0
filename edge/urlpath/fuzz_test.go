package urlpath

import (
	"errors"
	"strings"
	"testing"
)

// FuzzNormalize: no input panics; every refusal is a known Error; every
// accepted path is in normal form (see checkNormal) and its query is the
// target's, verbatim. Seeds: the corpus, and testdata/fuzz/FuzzNormalize.
func FuzzNormalize(f *testing.F) {
	for _, c := range readCorpus(f) {
		f.Add(c.Target)
	}
	f.Fuzz(func(t *testing.T, target string) {
		p, q, err := Normalize(target)
		if err != nil {
			var e Error
			if !errors.As(err, &e) || e.reason() == 0 || p != "" || q != "" {
				t.Fatalf("Normalize(%q) = %q, %q, %#v: want a known Error and nothing else", target, p, q, err)
			}
			return
		}
		if q != "" && !strings.HasSuffix(target, "?"+q) {
			t.Errorf("Normalize(%q): query %q is not the target's", target, q)
		}
		if strings.ContainsFunc(q, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == '#' }) {
			t.Errorf("Normalize(%q): query %q has a byte it may not", target, q)
		}
		checkNormal(t, target, p)
	})
}
