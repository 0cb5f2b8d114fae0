// Package loopback tells whether an address names this host only: the
// check behind every "required when not on loopback" and the admin API's
// Host rule. A leaf.
package loopback

import (
	"net"
	"net/netip"
	"strings"
)

// Host reports whether s, a host or host:port (an IPv6 address bracketed
// or not), is 127.0.0.0/8, ::1 or localhost. An empty host, which listens
// on every interface, is not.
func Host(s string) bool {
	if h, _, err := net.SplitHostPort(s); err == nil {
		s = h
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if strings.EqualFold(s, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(s)
	return err == nil && a.IsLoopback()
}
