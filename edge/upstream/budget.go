package upstream

import "sync/atomic"

// retryBudget caps retries at a share of requests, so that retries cannot
// multiply the load on a struggling service: each request earns `ratio` of a
// retry, each retry spends one. A small floor lets a quiet service retry too.
type retryBudget struct {
	milli atomic.Int64 // thousandths of a retry
	earnM int64
}

const (
	budgetFloor = 10 * 1000 // retries always available to an idle service
	budgetCap   = 100 * 1000
)

func (r *retryBudget) init(ratio float64) {
	r.earnM = int64(ratio * 1000)
	r.milli.Store(budgetFloor)
}

func (r *retryBudget) earn() {
	if r.milli.Add(r.earnM) > budgetCap {
		r.milli.Store(budgetCap) // a lost race here only rounds the cap
	}
}

func (r *retryBudget) spend() bool {
	for {
		v := r.milli.Load()
		if v < 1000 {
			return false
		}
		if r.milli.CompareAndSwap(v, v-1000) {
			return true
		}
	}
}
