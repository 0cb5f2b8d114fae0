package geo

import (
	"net/http"
	"net/netip"
	"strings"
)

// Client is who sent a request, as far as the node can tell.
type Client struct {
	// Addr is the client, or the last trusted hop when the headers could
	// not say who stood behind it; the zero Addr when the connection's
	// address was unreadable.
	Addr netip.Addr
	// Known is whether the node vouches for Addr as the client, rather
	// than as only the last trusted hop before it.
	Known bool
	// Proxied is whether the connection's peer is a trusted proxy, whose
	// forwarding headers are kept.
	Proxied bool
}

// ResolveClient returns the client behind r. Forwarding headers are
// believed only while the hop that added them is a trusted proxy: the
// chain is walked from the connection's peer leftwards and stops at the
// first untrusted hop, so a client cannot choose its own address by
// sending X-Forwarded-For. Forwarded (RFC 7239) and X-Forwarded-For are
// each believed alone; when both are present they must name the same
// client, since a proxy that writes one passes a client's own copy of the
// other on as it came. When the headers cannot say who the client is (a
// hop that does not parse, or two headers naming different clients), the
// last trusted hop is the best the node knows: Addr, but not Known.
//
// A node resolves once, as the request arrives, and every part of it
// takes that answer: a second reading could see other headers.
func ResolveClient(r *http.Request, trusted []netip.Prefix) Client {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return Client{}
	}
	// A link-local peer's zone names this host's interface, not the peer:
	// kept, no prefix would contain it and every header would carry it.
	addr := peer.Addr().Unmap().WithZone("")
	if !isTrusted(addr, trusted) {
		return Client{Addr: addr, Known: true}
	}
	c := Client{Proxied: true}
	fwd, xff := r.Header.Values("Forwarded"), r.Header.Values("X-Forwarded-For")
	switch {
	case len(fwd) == 0:
		c.Addr, c.Known = walk(addr, xff, false, trusted)
	case len(xff) == 0:
		c.Addr, c.Known = walk(addr, fwd, true, trusted)
	default:
		a, okA := walk(addr, fwd, true, trusted)
		b, okB := walk(addr, xff, false, trusted)
		c.Addr, c.Known = a, okA && okB && a == b
		if !c.Known {
			c.Addr = addr // which one a proxy wrote is unknown
		}
	}
	return c
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

// Forward makes what h, the request's headers, tell the route's
// transforms and the backend about the client the node's own word. From a
// peer that is not a trusted proxy, every header through which a hop names
// the client or how it connected is the client's own claim and is dropped:
// Forwarded, every X-Forwarded-*, and the one-address headers frameworks
// read first (X-Real-IP, True-Client-IP, ...). From a trusted proxy they
// are kept. Either way X-Real-IP is set to the client, which the node
// vouches for, or removed when the headers could not say who the client
// is: it must never name a trusted proxy a client hid behind. The proxy
// appends the peer to X-Forwarded-For.
func (c Client) Forward(h http.Header) {
	if !c.Proxied {
		for k := range h {
			if NamesClient(k) {
				delete(h, k)
			}
		}
	}
	if c.Known {
		h["X-Real-Ip"] = []string{c.Addr.String()}
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
