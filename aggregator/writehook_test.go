package aggregator

import "time"

// SetWriteTimeout shortens c's bound on writing a response, for the tests
// of it.
func SetWriteTimeout(c *Config, d time.Duration) { c.write = d }
