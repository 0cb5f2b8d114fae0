// Package workload generates representative telemetry batches, random but
// reproducible from the caller's seed. The benchmark measures on them and
// the dictionary generator trains on them, so both see the same shape.
package workload

import (
	"fmt"
	"math/rand/v2"
	"time"

	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// Batch is what one node records in one default 5s interval: a sample per
// second with three services, 1% of 500 req/s as access records, a decision
// every 10s on average and an occasional membership event.
func Batch(rng *rand.Rand, node string, seq uint64, at time.Time) *wire.Batch {
	b := &wire.Batch{Node: node, Seq: seq, Created: at}
	paths := []string{"/", "/api/v1/items", "/api/v1/items/42", "/static/app.js", "/img/logo.png", "/login"}
	for s := range 5 {
		t := at.Add(time.Duration(s-5) * time.Second)
		svcs := map[string]telemetry.ServiceSample{}
		for _, name := range []string{"api", "static", "auth"} {
			var h telemetry.Histogram
			for range 100 {
				h.Observe(time.Duration(rng.ExpFloat64()*20e3) * time.Microsecond)
			}
			svcs[name] = telemetry.ServiceSample{RPS: 100 + rng.Float64()*80, ErrorRate: rng.Float64() * 0.01,
				InFlight: rng.Int64N(20), Latency: h.Snapshot(), Backends: 4, HealthyBackends: 4}
		}
		b.Samples = append(b.Samples, telemetry.NodeSample{Node: node, Region: "eu-west", Time: t, Window: time.Second,
			RPS: 400 + rng.Float64()*200, InFlight: rng.Int64N(50), CPU: rng.Float64(), MemBytes: 200<<20 + uint64(rng.IntN(1<<20)), Services: svcs})
	}
	for range 25 {
		b.Access = append(b.Access, telemetry.AccessRecord{Time: at.Add(-time.Duration(rng.IntN(5000)) * time.Millisecond),
			Route: "main", Service: "api", Method: "GET", Path: paths[rng.IntN(len(paths))], Status: 200, Proto: "HTTP/3",
			Duration: time.Duration(rng.ExpFloat64() * 20e6), Bytes: rng.Int64N(50_000), Client: fmt.Sprintf("198.51.100.%d", rng.IntN(255))})
	}
	if rng.IntN(2) == 0 {
		b.Decisions = append(b.Decisions, telemetry.Decision{Time: at, Node: node, Region: "eu-west", Policy: "latency",
			Action: "weight", Service: "api", Target: "10.0.0.3:8080", Value: 0.5, Reason: "p99 320ms above 250ms target", Applied: true})
	}
	if rng.IntN(20) == 0 {
		b.Events = append(b.Events, telemetry.Event{Time: at, Node: node, Kind: "member_join", Fields: map[string]string{"peer": "fra-2"}})
	}
	b.Cost = &wire.Cost{BytesSent: seq * 1500, EncodeCPU: time.Duration(seq) * 200 * time.Microsecond}
	return b
}
