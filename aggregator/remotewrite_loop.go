package aggregator

import (
	"context"
	"time"

	"perigee/aggregator/remotewrite"
)

// remoteWriteLoop forwards the fleet figures, the same ones /metrics shows,
// every interval. A push that fails for a passing reason is retried a few
// times within the interval; one that still fails is logged and counted:
// the next push carries fresh values, and the store keeps the full history.
// remoteWriteAttempts bounds the tries of one push; the backoff starts at
// interval/16 and doubles. Pushes run one at a time and the ticker drops
// the ticks a slow push misses, so a slow receiver delays pushes rather
// than piling them up.
const remoteWriteAttempts = 3

func (s *server) remoteWriteLoop(ctx context.Context, rw *RemoteWrite) {
	client := remotewrite.NewClient(rw.Interval)
	t := time.NewTicker(rw.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		figs := fleetFigures(s.fleet.view(now, s.places, s.dedup))
		series := make([]remotewrite.Series, len(figs))
		for i, f := range figs {
			labels := []remotewrite.Label{{Name: "__name__", Value: f.name}}
			for j := 0; j+1 < len(f.labels); j += 2 {
				labels = append(labels, remotewrite.Label{Name: f.labels[j], Value: f.labels[j+1]})
			}
			series[i] = remotewrite.Series{Labels: labels, Samples: []remotewrite.Sample{{Value: f.value, Time: now}}}
		}
		err := remotewrite.PushRetry(ctx, client, rw.URL, remotewrite.Encode(series), remoteWriteAttempts, rw.Interval/16)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("remote write failed", "url", redactedURL(rw.URL), "series", len(series), "err", err)
				s.metrics.remoteWrite.WithLabelValues("error").Inc()
			}
			continue
		}
		s.metrics.remoteWrite.WithLabelValues("ok").Inc()
	}
}
