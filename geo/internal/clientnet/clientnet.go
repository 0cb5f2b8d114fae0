// Package clientnet names the network a client address belongs to: the unit
// at which locations are cached, round trips are learnt and answers are kept
// stable. A /24 (IPv4) or /48 (IPv6) is usually one site behind one path.
package clientnet

import "net/netip"

// Of returns the /24 or /48 holding addr, with IPv4-mapped IPv6 addresses
// treated as IPv4. The zero prefix is returned for an invalid address.
func Of(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := 48
	if addr.Is4() {
		bits = 24
	}
	p, err := addr.WithZone("").Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}
