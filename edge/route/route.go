// Package route picks the most specific route for a request: host first
// (exact, then the longest wildcard suffix, then any host), then the longest
// path prefix, then a route that names the method over one that does not.
package route

import (
	"net"
	"net/netip"
	"sort"
	"strings"
)

// Rule is one route's match conditions and what it leads to.
type Rule[T any] struct {
	Host       string   // "example.com", "*.example.com", "*" or ""
	PathPrefix string   // "" matches every path
	Methods    []string // empty matches every method
	Target     T
}

// ValidMethod reports whether m is a method the node takes: methods are
// case-sensitive (RFC 9110 9.1), so "get" is not GET, and a backend that
// folds case would serve it as GET past that route's transforms. As nginx
// does, the node takes only A-Z, digits, '-' and '_'.
func ValidMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if c := m[i]; (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return m != ""
}

// ValidHost reports whether h, a request's Host or :authority, is one the
// router places as a backend would: a name of labels (letters, digits, '-'
// and '_', no empty one, one trailing dot at most) or an IP literal in
// brackets, then an optional numeric port; or empty (HTTP/1.0). The
// listeners take more (Go's HTTP/1.1 parser allows sub-delims, '%' and any
// number of colons), and a spelling the router cannot place goes to the
// any-host routes, where a backend may read it as a name a host route
// protects: nginx takes "priv.example:80:80" as priv.example.
func ValidHost(h string) bool {
	name, port := h, ""
	if i := strings.LastIndexByte(h, ']'); strings.HasPrefix(h, "[") {
		if i < 0 || !ipLiteral(h[1:i]) {
			return false
		}
		name, port = "", h[i+1:]
	} else if i := strings.IndexByte(h, ':'); i >= 0 {
		name, port = h[:i], h[i:]
	}
	if port != "" && (port[0] != ':' || len(port) > 6 || !digits(port[1:])) {
		return false
	}
	return hostName(name)
}

// hostName reports whether s is empty or labels separated by single dots,
// with at most one trailing dot.
func hostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	label := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			label++
		case c == '.' && label > 0:
			label = 0
		default:
			return false
		}
	}
	return s == "" || label > 0
}

// ipLiteral reports whether s is what an IP literal holds between its
// brackets: an IPv6 address, and a zone after '%' ("%25" in a URI).
func ipLiteral(s string) bool {
	addr, zone, _ := strings.Cut(s, "%")
	if a, err := netip.ParseAddr(addr); err != nil || !a.Is6() {
		return false
	}
	for i := 0; i < len(zone); i++ {
		if c := zone[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '.' || c == '-' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Table is an immutable, lock-free lookup structure built once per config.
type Table[T any] struct {
	exact    map[string][]Rule[T]
	wildcard []hostGroup[T] // longest suffix first
	anyHost  []Rule[T]
}

type hostGroup[T any] struct {
	suffix string // ".example.com"
	rules  []Rule[T]
}

// New builds a table. Rules keep their relative order among equals, so the
// first of two identical matches wins.
func New[T any](rules []Rule[T]) *Table[T] {
	t := &Table[T]{exact: map[string][]Rule[T]{}}
	wild := map[string][]Rule[T]{}
	for _, r := range rules {
		h := strings.ToLower(r.Host)
		switch {
		case h == "" || h == "*":
			t.anyHost = append(t.anyHost, r)
		case strings.HasPrefix(h, "*."):
			wild[h[1:]] = append(wild[h[1:]], r)
		default:
			t.exact[h] = append(t.exact[h], r)
		}
	}
	for _, rs := range t.exact {
		sortBySpecificity(rs)
	}
	for suffix, rs := range wild {
		sortBySpecificity(rs)
		t.wildcard = append(t.wildcard, hostGroup[T]{suffix, rs})
	}
	sort.SliceStable(t.wildcard, func(i, j int) bool { return len(t.wildcard[i].suffix) > len(t.wildcard[j].suffix) })
	sortBySpecificity(t.anyHost)
	return t
}

func sortBySpecificity[T any](rs []Rule[T]) {
	sort.SliceStable(rs, func(i, j int) bool {
		if a, b := len(rs[i].PathPrefix), len(rs[j].PathPrefix); a != b {
			return a > b
		}
		return len(rs[i].Methods) > 0 && len(rs[j].Methods) == 0
	})
}

// Match returns the target of the most specific rule that matches.
func (t *Table[T]) Match(host, method, path string) (T, bool) {
	host = normalizeHost(host)
	if rs, ok := t.exact[host]; ok {
		if r, ok := first(rs, method, path); ok {
			return r, true
		}
	}
	for _, g := range t.wildcard {
		if len(host) > len(g.suffix) && strings.HasSuffix(host, g.suffix) {
			if r, ok := first(g.rules, method, path); ok {
				return r, true
			}
		}
	}
	return first(t.anyHost, method, path)
}

func first[T any](rs []Rule[T], method, path string) (T, bool) {
	for i := range rs {
		r := &rs[i]
		if !strings.HasPrefix(path, r.PathPrefix) {
			continue
		}
		if len(r.Methods) > 0 && !contains(r.Methods, method) {
			continue
		}
		return r.Target, true
	}
	var zero T
	return zero, false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// normalizeHost drops the port and a trailing dot and lower-cases the name;
// it allocates only when the host is not already in that form.
func normalizeHost(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}
