package route

import "testing"

func table() *Table[string] {
	return New([]Rule[string]{
		{Host: "*", PathPrefix: "/", Target: "catch-all"},
		{Host: "*", PathPrefix: "/api/", Target: "api"},
		{Host: "*", PathPrefix: "/api/", Methods: []string{"POST"}, Target: "api-post"},
		{Host: "*.example.com", PathPrefix: "/", Target: "wild"},
		{Host: "*.eu.example.com", PathPrefix: "/", Target: "wild-eu"},
		{Host: "shop.example.com", PathPrefix: "/cart", Target: "cart"},
		{Host: "Shop.Example.com", PathPrefix: "/", Target: "shop"},
	})
}

func TestMostSpecificWins(t *testing.T) {
	tb := table()
	cases := []struct{ host, method, path, want string }{
		{"other.net", "GET", "/x", "catch-all"},
		{"other.net", "GET", "/api/v1", "api"},
		{"other.net", "POST", "/api/v1", "api-post"},
		{"a.example.com", "GET", "/api/v1", "wild"},
		{"a.eu.example.com", "GET", "/", "wild-eu"},
		{"shop.example.com:8443", "GET", "/cart/1", "cart"},
		{"SHOP.example.com.", "GET", "/", "shop"},
		{"example.com", "GET", "/", "catch-all"}, // *.example.com needs a label before the suffix
		{"[::1]:8443", "GET", "/api/", "api"},
	}
	for _, c := range cases {
		got, ok := tb.Match(c.host, c.method, c.path)
		if !ok || got != c.want {
			t.Errorf("Match(%q, %q, %q) = %q, %v; want %q", c.host, c.method, c.path, got, ok, c.want)
		}
	}
}

func TestExactHostFallsBackWhenNoPathMatches(t *testing.T) {
	tb := New([]Rule[string]{
		{Host: "a.com", PathPrefix: "/only/", Target: "a-only"},
		{Host: "*", PathPrefix: "/", Target: "any"},
	})
	if got, _ := tb.Match("a.com", "GET", "/elsewhere"); got != "any" {
		t.Fatalf("got %q, want fallback to any-host route", got)
	}
}

func TestNoMatch(t *testing.T) {
	tb := New([]Rule[string]{{Host: "a.com", PathPrefix: "/x", Methods: []string{"GET"}, Target: "x"}})
	for _, c := range [][3]string{{"b.com", "GET", "/x"}, {"a.com", "PUT", "/x"}, {"a.com", "GET", "/y"}} {
		if got, ok := tb.Match(c[0], c[1], c[2]); ok {
			t.Errorf("Match(%v) = %q, want no match", c, got)
		}
	}
}

func FuzzMatch(f *testing.F) {
	tb := table()
	f.Add("shop.example.com:443", "GET", "/cart")
	f.Add("[::1", "POST", "")
	f.Add(":::", "", "/api/")
	f.Add("*.example.com", "GET", "/")
	f.Fuzz(func(t *testing.T, host, method, path string) {
		got, ok := tb.Match(host, method, path)
		if ok != (got != "") {
			t.Fatalf("Match(%q,%q,%q) = %q, %v", host, method, path, got, ok)
		}
		// The catch-all route matches every path that starts with "/".
		if len(path) > 0 && path[0] == '/' && !ok {
			t.Fatalf("path %q matched nothing despite the catch-all", path)
		}
	})
}
