package rtt

import (
	"context"
	"net"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// QUICRTT returns quic-go's smoothed RTT of the connection, once it has a
// sample.
func QUICRTT(c *quic.Conn) (time.Duration, bool) {
	if c == nil {
		return 0, false
	}
	d := c.ConnectionStats().SmoothedRTT
	return d, d > 0
}

// probe remembers how to measure one connection and when it was last
// sampled, so a long keep-alive connection is measured now and then rather
// than on every request.
type probe struct {
	measure func() (time.Duration, bool)
	next    atomic.Int64 // unix nanoseconds before which no sample is due
}

type probeKey struct{}

// ConnContext attaches a TCP (or TLS over TCP) connection for measurement;
// its shape fits http.Server.ConnContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, probeKey{}, &probe{measure: func() (time.Duration, bool) { return TCPRTT(c) }})
}

// QUICConnContext attaches a QUIC connection for measurement; its shape fits
// http3.Server.ConnContext.
func QUICConnContext(ctx context.Context, c *quic.Conn) context.Context {
	return context.WithValue(ctx, probeKey{}, &probe{measure: func() (time.Duration, bool) { return QUICRTT(c) }})
}

// Sample measures the connection attached to ctx when a sample is due: on
// its first request and then at most once per interval. Only one of
// concurrent requests on the connection takes the sample.
func Sample(ctx context.Context, now time.Time, interval time.Duration) (time.Duration, bool) {
	p, _ := ctx.Value(probeKey{}).(*probe)
	if p == nil {
		return 0, false
	}
	due := p.next.Load()
	if now.UnixNano() < due || !p.next.CompareAndSwap(due, now.Add(interval).UnixNano()) {
		return 0, false
	}
	return p.measure()
}
