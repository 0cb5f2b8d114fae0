// Package via writes and reads the Via header (RFC 9110 7.6.3): every
// proxy of the node names itself there as it passes a message on, and
// finds its own name there when a request comes back through it (a loop,
// a backend that is the node's own admin API).
package via

import (
	"fmt"
	"net/http"
	"strings"
)

// Hop is the Via entry of node for a message that came as HTTP/major.minor.
func Hop(major, minor int, node string) string { return version(major, minor) + " " + node }

// version is the entry's received-protocol: "1.0", "1.1", "2" or "3".
func version(major, minor int) string {
	switch {
	case major == 2:
		return "2"
	case major == 3:
		return "3"
	case major == 1 && minor == 0:
		return "1.0"
	default:
		return "1.1"
	}
}

// PassedThrough reports whether one of h's Via hops was received by node
// ("1.1 node", "2 node (comment)"): the request went through its proxy.
func PassedThrough(h http.Header, node string) bool {
	for _, v := range h["Via"] {
		for hop := range strings.SplitSeq(v, ",") {
			_, by, _ := strings.Cut(strings.TrimSpace(hop), " ")
			by, _, _ = strings.Cut(strings.TrimSpace(by), " ")
			if by == node {
				return true
			}
		}
	}
	return false
}

// CheckNode refuses a node id that cannot be written as Via's
// received-by and found there again: 1 to 64 letters, digits, '-', '_'
// and '.', the mesh's rule for the names it gossips. With a space or a
// comma in it, PassedThrough never found the node in its own Via, and the
// loop guard and the admin API's refusal of proxied requests were off.
func CheckNode(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("node.id %q must be 1 to 64 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("node.id %q may hold only letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}
