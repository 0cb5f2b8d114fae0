package aggregator

import "time"

// SetListenerTimeouts shortens c's header read and idle bounds, for the
// tests of them.
func SetListenerTimeouts(c *Config, readHeader, idle time.Duration) {
	c.readHeader, c.idle = readHeader, idle
}
