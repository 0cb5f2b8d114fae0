package edge

import (
	"context"
	"fmt"
	"log/slog"

	"perigee/edge/admin"
	"perigee/edge/config"
	"perigee/telemetry"
	"perigee/telemetry/ship"
)

// shipping sends the node's samples, decisions and mesh events to the
// aggregator when the config names one; without, what it is handed is
// dropped.
type shipping struct {
	log     *slog.Logger
	shipper *ship.Shipper
	stop    context.CancelFunc
	done    chan struct{} // closed when the shipper has flushed and stopped
}

func (s *shipping) start(cfg *config.Config, a *admin.API) error {
	a.HandleJSON("GET /telemetry", func() any {
		if s.shipper == nil {
			return map[string]string{"shipping": "off"}
		}
		st := s.shipper.Stats()
		return map[string]any{
			"bytes_sent": st.BytesSent, "batches_acked": st.BatchesAcked, "records_acked": st.RecordsAcked, "batches_refused": st.BatchesRefused,
			"spooled_batches": st.SpooledBatches, "spool_bytes": st.SpoolBytes, "dropped_batches": st.DroppedBatches,
			"dropped_records": st.DroppedRecords, "pending_records": st.PendingRecords,
			"encode_cpu_seconds": st.EncodeCPU.Seconds(), "last_proto": st.LastProto,
		}
	})
	if cfg.Telemetry == nil {
		return nil
	}
	sc := *cfg.Telemetry
	sc.Node, sc.Region = cfg.Node.ID, cfg.Node.Region
	shipper, err := ship.New(sc, s.log) // the shipper names itself in its logs
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Pos("telemetry"), err)
	}
	ctx, stop := context.WithCancel(context.Background())
	s.shipper, s.stop, s.done = shipper, stop, make(chan struct{})
	go func() {
		defer close(s.done)
		shipper.Run(ctx)
	}()
	return nil
}

// close stops the shipper, which flushes what it can until ctx ends.
func (s *shipping) close(ctx context.Context) {
	if s.shipper == nil {
		return
	}
	s.stop()
	select {
	case <-s.done:
	case <-ctx.Done():
	}
}

func (s *shipping) sample(x telemetry.NodeSample) {
	if s.shipper != nil {
		s.shipper.AddSample(x)
	}
}

func (s *shipping) decision(d telemetry.Decision) {
	if s.shipper != nil {
		s.shipper.AddDecision(d)
	}
}

func (s *shipping) event(ev telemetry.Event) {
	if s.shipper != nil {
		s.shipper.AddEvent(ev)
	}
}
