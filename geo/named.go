package geo

import (
	"net/netip"
	"sync/atomic"
	"time"

	"perigee/connlimit"
	"perigee/geo/internal/shardcache"
)

// namedWindow is the window in which a namer's new networks are counted.
const namedWindow = 10 * time.Second

// namedBudget bounds the networks that clients named by others (a
// resolver's client subnet, or a UDP source anyone can forge) add to the
// remembered answers: each new one evicts another's when the memory is
// full. Per window, one namer (an IPv4 address or IPv6 /64) may add
// 1/1024 of the memory and all namers together 1/64 of it, so that a flood
// turns the memory over in no less than 64 windows; past that, the named
// are answered as well but not remembered.
type namedBudget struct {
	perNamer, total int64
	namers          *shardcache.Cache[netip.Prefix, window]
	all             struct{ start, used atomic.Int64 } // unix nanoseconds, networks added since
}

type window struct {
	start time.Time
	used  int64
}

func newNamedBudget(memory int) *namedBudget {
	return &namedBudget{
		perNamer: int64(max(1, memory/1024)),
		total:    int64(max(1, memory/64)),
		// A namer forgotten early gets a new allowance; total bounds that.
		namers: shardcache.New[netip.Prefix, window](max(1024, memory/16)),
	}
}

// admit reports whether namer may add one more network now.
func (b *namedBudget) admit(namer netip.Addr, now time.Time) bool {
	ok := false
	b.namers.Update(connlimit.KeyIP(namer), func(w window, _ bool) window {
		if now.Sub(w.start) >= namedWindow {
			w = window{start: now}
		}
		ok = w.used < b.perNamer
		if ok {
			w.used++
		}
		return w
	})
	if !ok {
		return false
	}
	// Lock-free: a race at a window's turn admits a few more at most.
	if start := b.all.start.Load(); now.UnixNano()-start >= int64(namedWindow) && b.all.start.CompareAndSwap(start, now.UnixNano()) {
		b.all.used.Store(0)
	}
	return b.all.used.Add(1) <= b.total
}
