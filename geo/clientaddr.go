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
// as it came. When the headers cannot say who the client is (a hop that
// does not parse, or two headers naming different clients), the last
// trusted hop is the best the node knows, and is returned. The zero Addr
// means RemoteAddr was unreadable.
func ClientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	addr, _ := resolve(r, trusted)
	return addr
}

// resolve is ClientAddr, and whether the node knows the client rather than
// only the last trusted hop before it.
func resolve(r *http.Request, trusted []netip.Prefix) (netip.Addr, bool) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	addr := peer.Addr().Unmap()
	if !isTrusted(addr, trusted) {
		return addr, true
	}
	fwd, xff := r.Header.Values("Forwarded"), r.Header.Values("X-Forwarded-For")
	switch {
	case len(fwd) == 0:
		return walk(addr, xff, false, trusted)
	case len(xff) == 0:
		return walk(addr, fwd, true, trusted)
	}
	a, ok := walk(addr, fwd, true, trusted)
	if b, okB := walk(addr, xff, false, trusted); a != b || !ok || !okB {
		return addr, false // which one a proxy wrote is unknown
	}
	return a, true
}

// walk follows the hops of X-Forwarded-For lines, or the for= of
// Forwarded ones, leftwards from addr, a trusted peer, to the first
// untrusted one. It reads the lines in place: a trusted proxy passes on
// whatever chain its client wrote, up to the header limit. A hop that does
// not parse hides what is to its left: the walk stops at the last trusted
// hop, and reports that it did not find the client.
func walk(addr netip.Addr, lines []string, forwarded bool, trusted []netip.Prefix) (netip.Addr, bool) {
	for i := len(lines) - 1; i >= 0; i-- {
		for rest, more := lines[i], true; more; {
			j := strings.LastIndexByte(rest, ',')
			hop := rest[j+1:]
			rest, more = rest[:max(j, 0)], j >= 0
			if forwarded {
				hop = forParam(hop)
			}
			a, ok := parseHop(hop)
			if !ok {
				return addr, false
			}
			addr = a
			if !isTrusted(addr, trusted) {
				return addr, true
			}
		}
	}
	return addr, true
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forParam is the for= parameter of one Forwarded element (the last, if
// it has several), or "".
func forParam(elem string) string {
	hop := ""
	for pair := range strings.SplitSeq(elem, ";") {
		if k, v, _ := strings.Cut(strings.TrimSpace(pair), "="); strings.EqualFold(k, "for") {
			hop = v
		}
	}
	return hop
}

// parseHop reads one hop: a bare address, address:port, [v6], [v6]:port or
// a quoted form of those. Obfuscated identifiers, "unknown" and zones do
// not parse. It tries only the form the hop has: a failed parse costs an
// error's allocation, and a trusted chain can be thousands of hops long.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	var a netip.Addr
	var err error
	if v6, ok := strings.CutPrefix(s, "["); ok && strings.HasSuffix(v6, "]") {
		a, err = netip.ParseAddr(v6[:len(v6)-1])
	} else if ok || strings.Count(s, ":") == 1 {
		var ap netip.AddrPort
		ap, err = netip.ParseAddrPort(s)
		a = ap.Addr()
	} else {
		a, err = netip.ParseAddr(s)
	}
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// Forwarding makes what r's headers tell the route's transforms and the
// backend about the client the node's own word. From a peer that is not a
// trusted proxy, every header through which a hop names the client or how
// it connected is the client's own claim and is dropped: Forwarded, every
// X-Forwarded-*, and the one-address headers frameworks read first
// (X-Real-IP, True-Client-IP, ...). From a trusted proxy they are kept.
// Either way X-Real-IP is set to ClientAddr, which the node vouches for, or
// removed when the headers could not say who the client is: it must never
// name a trusted proxy a client hid behind. The proxy appends the peer to
// X-Forwarded-For.
func Forwarding(r *http.Request, trusted []netip.Prefix) {
	client, known := resolve(r, trusted)
	h := r.Header
	if peer, err := netip.ParseAddrPort(r.RemoteAddr); err != nil || !isTrusted(peer.Addr().Unmap(), trusted) {
		for k := range h {
			if NamesClient(k) {
				delete(h, k)
			}
		}
	}
	if known {
		h["X-Real-Ip"] = []string{client.String()}
	} else {
		delete(h, "X-Real-Ip")
	}
}

// clientHeaders are the one-address headers proxies and CDNs set, and
// frameworks read before X-Forwarded-For.
var clientHeaders = []string{"Forwarded", "X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "X-Cluster-Client-Ip", "Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip", "X-Original-Forwarded-For"}

// NamesClient reports whether a header named k carries a hop's word about
// the client: one of clientHeaders or X-Forwarded-*.
func NamesClient(k string) bool {
	const xf = "X-Forwarded-"
	if len(k) > len(xf) && strings.EqualFold(k[:len(xf)], xf) {
		return true
	}
	for _, name := range clientHeaders {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}
