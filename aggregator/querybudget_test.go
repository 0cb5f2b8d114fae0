package aggregator_test

import (
	"strings"
	"testing"
	"time"

	"perigee/aggregator"
)

// A series query past the memory window at a step no rollup tier serves
// decodes every stored batch of its window, which anyone with the API's
// access may ask for: a week of a fleet's batches is hours of CPU, and the
// query held one of the two store slots all along. What one query may
// decode is bounded now; past it the answer is a 422 that says so, and
// says what is answered instead (a step of whole minutes, from the
// rollups, which decode nothing here).
func TestStoreQueryDecodesWithinItsBudget(t *testing.T) {
	const budget = 256 << 10
	a := startAggregator(t, func(c *aggregator.Config) {
		c.MemoryWindow = time.Minute
		aggregator.SetQueryDecodeBudget(c, budget)
	})
	for seq := uint64(1); seq <= 12; seq++ { // about 40 KiB decompressed each
		if status, msg := post(t, a, tokenA, bulkyBatch(t, "node-a", seq, 32)); status != 200 {
			t.Fatalf("post: %d %s", status, msg)
		}
	}
	status, body := a.get(t, "/v1/series?window=1h&step=30s")
	if status != 422 || !strings.Contains(string(body), "decode") || !strings.Contains(string(body), "whole minutes") {
		t.Fatalf("a store query over its budget: %d %s", status, body)
	}
	if status, body := a.get(t, "/v1/series?window=1h&step=1m"); status != 200 || !strings.Contains(string(body), `"source":"1m"`) {
		t.Fatalf("the same window from the rollups: %d %s", status, body)
	}
}
