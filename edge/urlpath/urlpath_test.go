package urlpath

import (
	"errors"
	"net/url"
	"path"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"perigee/edge/urlpath/corpus"
)

func readCorpus(t testing.TB) []corpus.Path {
	t.Helper()
	cases, err := corpus.Paths("testdata/corpus.txt")
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

func TestCorpus(t *testing.T) {
	codes := map[string]bool{}
	for e := Error(1); int(e) < len(reasons); e++ {
		codes[e.Code()] = true
	}
	cases := readCorpus(t)
	if len(cases) < 100 {
		t.Fatalf("corpus has %d cases; the file did not parse", len(cases))
	}
	for _, c := range cases {
		p, q, err := Normalize(c.Target)
		got := p
		if q != "" {
			got += "?" + q
		}
		if err != nil {
			var e Error
			if !errors.As(err, &e) {
				t.Errorf("corpus.txt:%d: Normalize(%q): untyped error %v", c.Line, c.Target, err)
				continue
			}
			got = "reject:" + e.Code()
		}
		if got != c.Answer {
			t.Errorf("corpus.txt:%d: Normalize(%q) = %q, want %q", c.Line, c.Target, got, c.Answer)
		}
		if code, ok := strings.CutPrefix(c.Answer, "reject:"); ok && !codes[code] {
			t.Errorf("corpus.txt:%d: unknown code %q", c.Line, code)
		}
		if err == nil {
			checkNormal(t, c.Target, p)
		}
	}
}

// checkNormal asserts what every accepted path must be: in normal form (so
// Normalize leaves it alone), free of every ambiguity the rules remove, the
// same resource path.Clean finds in the input, and forwarded byte for byte by
// net/url once set as RawPath.
func checkNormal(t testing.TB, target, p string) {
	t.Helper()
	if again, q, err := Normalize(p); err != nil || again != p || q != "" {
		t.Errorf("Normalize(%q) = %q; Normalize of that = %q, %q, %v: not idempotent", target, p, again, q, err)
	}
	if !strings.HasPrefix(p, "/") {
		t.Errorf("Normalize(%q) = %q: no leading slash", target, p)
	}
	for _, bad := range []string{"//", "/./", "/../", "\\", ";", "#", "?"} {
		if strings.Contains(p, bad) {
			t.Errorf("Normalize(%q) = %q: contains %q", target, p, bad)
		}
	}
	if strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") {
		t.Errorf("Normalize(%q) = %q: ends in a dot segment", target, p)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c <= ' ' || c >= 0x7f {
			t.Errorf("Normalize(%q) = %q: raw byte %#x", target, p, c)
		}
		if c != '%' {
			continue
		}
		if i+2 >= len(p) {
			t.Errorf("Normalize(%q) = %q: truncated escape", target, p)
			break
		}
		hex := p[i+1 : i+3]
		if hex != strings.ToUpper(hex) {
			t.Errorf("Normalize(%q) = %q: lowercase escape %%%s", target, p, hex)
		}
		v, err := strconv.ParseUint(hex, 16, 8)
		if err != nil {
			t.Errorf("Normalize(%q) = %q: bad escape %%%s", target, p, hex)
			continue
		}
		if isUnreserved(byte(v)) || v == '/' || v == '\\' || v == ';' || v < 0x20 || v == 0x7f {
			t.Errorf("Normalize(%q) = %q: escape %%%s should not survive", target, p, hex)
		}
	}
	decoded, err := url.PathUnescape(p)
	if err != nil {
		t.Errorf("Normalize(%q) = %q: %v", target, p, err)
		return
	}
	if u := (url.URL{Path: decoded, RawPath: p}); u.EscapedPath() != p {
		t.Errorf("Normalize(%q) = %q: net/url would forward %q", target, p, u.EscapedPath())
	}
	// The same resource as a decode-then-clean of the input: nothing dropped,
	// nothing invented (trailing slashes aside, which path.Clean removes).
	raw := target
	if !strings.HasPrefix(raw, "/") {
		raw = raw[strings.Index(raw, "://")+3:]
		raw = "/" + raw[min(len(raw), strings.IndexAny(raw+"/", "/?")):]
	}
	raw, _, _ = strings.Cut(raw, "?")
	if in, err := url.PathUnescape(raw); err == nil && path.Clean(in) != path.Clean(decoded) {
		t.Errorf("Normalize(%q) = %q: names %q, the input names %q", target, p, path.Clean(decoded), path.Clean(in))
	}
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// TestNormalPathsDoNotAllocate: the common case, a path already in normal
// form, costs the request no allocation; nor does one that only shortens.
func TestNormalPathsDoNotAllocate(t *testing.T) {
	for _, target := range []string{
		"/", "/private/x", "/api/v1/users/42?expand=true&x=%zz", "/caf%C3%A9/a%20b/", "/a/b/.", "/a/b/..", "/a/b//",
	} {
		if n := testing.AllocsPerRun(100, func() { _, _, _ = Normalize(target) }); n != 0 {
			t.Errorf("Normalize(%q): %v allocations, want 0", target, n)
		}
	}
}

// TestLongTargetsCostLinearMemory: a hostile target within the header
// limit costs a bounded multiple of its size, however it is spelled.
func TestLongTargetsCostLinearMemory(t *testing.T) {
	const size = 1 << 20
	for _, c := range []struct{ unit, want string }{
		{"/a/..", "/"},
		{"/%2e%2E", "/"},
		{"//", "/"},
		{"/%C3%A9\xc3\xa9", ""}, // every byte encoded: the output is 3/2 the input
	} {
		target := strings.Repeat(c.unit, size/len(c.unit))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		p, _, err := Normalize(target)
		runtime.ReadMemStats(&after)
		if err != nil || c.want != "" && p != c.want {
			t.Errorf("%d × %q: %.20q…, %v; want %q", size/len(c.unit), c.unit, p, err, c.want)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 8*size {
			t.Errorf("%d × %q: allocated %d bytes for a %d-byte target", size/len(c.unit), c.unit, got, len(target))
		}
	}
}

func TestErrorsHaveCodesAndReasons(t *testing.T) {
	seen := map[string]bool{}
	for e := Error(1); int(e) < len(reasons); e++ {
		if e.Code() == "" || e.Error() == "" || seen[e.Code()] {
			t.Errorf("Error(%d): code %q, reason %q", e, e.Code(), e.Error())
		}
		seen[e.Code()] = true
	}
	if got := Error(0).Error(); got == "" {
		t.Error("the zero Error has no text")
	}
}

func BenchmarkNormalize(b *testing.B) {
	for _, target := range []string{"/api/v1/users/42?expand=true", "/api//v1/./users/%2e%2e/42"} {
		b.Run(target, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _, _ = Normalize(target)
			}
		})
	}
}
