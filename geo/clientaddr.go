package geo

import (
	"net/http"
	"net/netip"
	"strings"
)

// ClientAddr returns the address of the client behind r. Forwarding headers
// are believed only while the hop that added them is a trusted proxy: the
// chain is walked from the connection's peer leftwards and stops at the
// first untrusted hop, so a client cannot choose its own address by sending
// X-Forwarded-For. Forwarded (RFC 7239) and X-Forwarded-For are each
// believed alone; when both are present they must name the same client,
// since a proxy that writes one passes a client's own copy of the other on
// as it came. The zero Addr means RemoteAddr was unreadable.
func ClientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := peer.Addr().Unmap()
	if !isTrusted(addr, trusted) {
		return addr
	}
	fwd, xff := r.Header.Values("Forwarded"), r.Header.Values("X-Forwarded-For")
	switch {
	case len(fwd) == 0:
		return walk(addr, xffHops(xff), trusted)
	case len(xff) == 0:
		return walk(addr, forwardedHops(fwd), trusted)
	}
	if a := walk(addr, forwardedHops(fwd), trusted); a == walk(addr, xffHops(xff), trusted) {
		return a
	}
	return addr // which one a proxy wrote is unknown; the last one we trust is the best we know
}

// walk follows hops leftwards from addr, a trusted peer, to the first
// untrusted one.
func walk(addr netip.Addr, hops []string, trusted []netip.Prefix) netip.Addr {
	for i := len(hops) - 1; i >= 0; i-- {
		hop, ok := parseHop(hops[i])
		if !ok {
			// An unreadable hop hides what is to its left; the last proxy
			// we trust is the best we know.
			return addr
		}
		addr = hop
		if !isTrusted(addr, trusted) {
			return addr
		}
	}
	return addr
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedHops lists the for= parameters of Forwarded lines, in order.
func forwardedHops(lines []string) []string {
	var hops []string
	for _, line := range lines {
		for elem := range strings.SplitSeq(line, ",") {
			hop := ""
			for pair := range strings.SplitSeq(elem, ";") {
				k, v, _ := strings.Cut(strings.TrimSpace(pair), "=")
				if strings.EqualFold(k, "for") {
					hop = v
				}
			}
			hops = append(hops, hop)
		}
	}
	return hops
}

// xffHops lists the hops of X-Forwarded-For lines, in order.
func xffHops(lines []string) []string {
	var hops []string
	for _, line := range lines {
		for hop := range strings.SplitSeq(line, ",") {
			hops = append(hops, hop)
		}
	}
	return hops
}

// parseHop reads one hop: a bare address, address:port, [v6]:port or a
// quoted form of those. Obfuscated identifiers and "unknown" do not parse.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
