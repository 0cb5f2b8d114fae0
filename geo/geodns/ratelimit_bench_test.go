package geodns

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRateLimitVerdict is the cost of the one lock over every bucket:
// with -cpu 1,2,8, ns/op that does not fall as goroutines are added is
// time spent waiting for it. Each goroutine asks for its own networks, as
// a flood of forged sources would.
func BenchmarkRateLimitVerdict(b *testing.B) {
	l := newRateLimit(100, 2)
	var next atomic.Uint32
	now := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		base := next.Add(1) << 16
		for i := uint32(0); pb.Next(); i++ {
			n := base | i&0xffff
			l.verdict(netip.AddrFrom4([4]byte{byte(n >> 16), byte(n >> 8), byte(n), 1}), now)
		}
	})
}
