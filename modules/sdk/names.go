package sdk

import "strings"

// ValidHeaderName reports whether name is a token (RFC 9110 5.6.2), the
// only header name the host lets a transform set: check a name a config
// gives at load, rather than trap on it at the first request.
func ValidHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
