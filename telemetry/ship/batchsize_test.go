package ship_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/telemetry"
	"perigee/telemetry/ship"
	"perigee/units"
)

// What waits for a batch is sealed in batches the aggregator takes. A
// policy may make a thousand decisions an evaluation, each with its own
// 256-byte names and reason; while the shipper is not cutting (a spool
// fsync that stalls, a start before Run) they pile up to MaxPending, and
// were sealed into one batch whose payload was over the aggregator's
// max_decompressed (16 MiB by default): it answered 413, and the batch,
// every decision in it and the event beside them, was dropped as one it
// would never take.
func TestPendingRecordsAreSealedInBatchesTheAggregatorTakes(t *testing.T) {
	a := serve(t, aggregator.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Tokens: map[string]string{"node-a": token}})
	s, err := ship.New(ship.Config{Aggregator: "https://" + a.Addr(), TokenFile: writeToken(t), Spool: ship.Spool{Dir: t.TempDir()},
		Interval: units.Duration(10 * time.Millisecond), Node: "node-a", InsecureSkipVerify: true, RetryMax: 50 * time.Millisecond},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	const decisions = 30_000
	long := strings.Repeat("x", 240)
	for i := range decisions {
		name := fmt.Sprintf("%s-%08d", long, i)
		s.AddDecision(telemetry.Decision{Time: time.Now(), Policy: "p", Action: "weight", Service: name, Target: name, Reason: name})
	}
	s.AddEvent(telemetry.Event{Time: time.Now(), Kind: "beside"})
	run(t, s)
	eventually(t, "every decision stored or a batch refused", func() bool {
		st := s.Stats()
		return st.BatchesRefused > 0 || st.RecordsAcked.Decisions == decisions && st.SpooledBatches == 0
	})
	st := s.Stats()
	if st.BatchesRefused != 0 || st.RecordsAcked != (ship.Records{Decisions: decisions, Events: 1}) {
		t.Fatalf("%d batches refused, records acknowledged %+v; want none refused and all %d decisions and the event stored",
			st.BatchesRefused, st.RecordsAcked, decisions)
	}
}
