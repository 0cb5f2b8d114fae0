package edge

import (
	"context"
	"sync"
	"time"
)

// A client that opens requests and cancels them at once (HTTP/2's rapid
// reset, CVE-2023-44487, and its HTTP/3 twin) costs itself two frames and
// the node a handler, a route and often a backend exchange each. So every
// connection counts, in runs of abandonRun requests, those its client gave
// up on within earlyAbandon of their start, before their answer's head;
// once half of a run are, the connection is closed, as Envoy closes one
// whose premature resets pass half its streams. A browser that cancels a
// request now and then, leaving a page, is far from that.
const (
	abandonRun   = 500
	earlyAbandon = time.Second
)

// abandons is one connection's count.
type abandons struct {
	close func() // the connection; called once
	mu    sync.Mutex
	seen  int // requests of the current run
	early int // of them, abandoned early
	done  bool
}

type abandonsKey struct{}

// withAbandons gives the connection whose requests carry ctx its count;
// close closes the connection.
func withAbandons(ctx context.Context, close func()) context.Context {
	return context.WithValue(ctx, abandonsKey{}, &abandons{close: close})
}

// noteAbandon counts a request of the connection client (its request's
// context as the listener made it) that started at start and ended with
// (answered) or without its answer's head. It reports whether this request
// was the one that closed the connection.
func noteAbandon(client context.Context, start time.Time, answered bool) bool {
	a, _ := client.Value(abandonsKey{}).(*abandons)
	if a == nil {
		return false
	}
	early := !answered && client.Err() != nil && time.Since(start) < earlyAbandon
	a.mu.Lock()
	if a.seen++; early {
		a.early++
	}
	closing := !a.done && a.early*2 >= abandonRun
	if closing {
		a.done = true
	} else if a.seen == abandonRun {
		a.seen, a.early = 0, 0
	}
	a.mu.Unlock()
	if closing {
		a.close()
	}
	return closing
}
