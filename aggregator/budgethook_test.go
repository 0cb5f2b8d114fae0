package aggregator

// SetQueryDecodeBudget lowers the decompressed bytes one series query may
// decode from the store, for the tests of it.
func SetQueryDecodeBudget(c *Config, n int64) { c.queryDecode = n }
