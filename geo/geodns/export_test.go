package geodns

import "time"

// SetUDPReadTimeout shortens the library's wait for a datagram, for a
// test of what an idle socket costs; it returns the previous one.
func SetUDPReadTimeout(d time.Duration) time.Duration {
	old := udpReadTimeout
	udpReadTimeout = d
	return old
}
