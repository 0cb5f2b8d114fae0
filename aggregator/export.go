package aggregator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"perigee/aggregator/remotewrite"
	"perigee/aggregator/store"
	"perigee/files"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// Export sends every stored batch, as full series, to an engine that
// speaks Prometheus remote-write (VictoriaMetrics, its cluster version,
// Mimir), for fleets that outgrow the embedded store.
type Export struct {
	URL string `yaml:"url"`
}

// The exporter follows the store with a cursor it persists after each
// acknowledged push, so every stored batch is sent at least once, whatever
// crashes. Its series are a pure function of the batch (labels from the
// batch, timestamps from its records), so a batch sent twice, by a restart
// or by two aggregators that both received it, writes the same samples at
// the same times, which the engine keeps once when it deduplicates
// (VictoriaMetrics: -dedup.minScrapeInterval=1ms). That is the
// exactly-once argument end to end: at least once here, idempotent there.
const (
	exportCursorFile = "export.cursor"
	exportEvery      = time.Second
	exportMaxBatches = 500 // per round
	// exportMaxSeries bounds one push (about 300 bytes a series in
	// memory): a batch within every decoding bound can still be a million
	// series (each latency bucket of each service is one).
	exportMaxSeries = 20_000
)

func (s *server) exportLoop(ctx context.Context, ex *Export) {
	client := remotewrite.NewClient(30 * time.Second)
	cursor := s.loadCursor()
	t := time.NewTicker(exportEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			next, n, err := s.exportOnce(ctx, client, ex.URL, cursor)
			if err != nil {
				// Retried every exportEvery: an engine down for an hour
				// must not be 3,600 lines.
				if ok, dropped := s.refusals.due(exportFailure, time.Now()); ok {
					s.log.Warn("export failed, will retry", append([]any{"url", redactedURL(ex.URL), "err", err,
						"next_line_within", refusalLogEvery}, dropped...)...)
				}
				s.metrics.export.WithLabelValues("error").Inc()
				break
			}
			if n == 0 {
				s.exportCaughtUp.Store(time.Now().UnixMilli())
				break
			}
			cursor = next
			s.metrics.export.WithLabelValues("ok").Add(float64(n))
			if err := s.saveCursor(cursor); err != nil {
				s.log.Error("export cursor", "err", err)
			}
		}
	}
}

// exportFailure is the export's key in the rate of refusal lines.
const exportFailure = "export_failure"

var errFull = errors.New("push full")

// exportOnce pushes up to exportMaxBatches batches after cursor, in pushes
// of at most exportMaxSeries series, and returns the position after the
// last one. After a failed push the cursor stays: the series pushed before
// it are pushed again, which the engine keeps once.
func (s *server) exportOnce(ctx context.Context, c *http.Client, url string, cursor store.Pos) (store.Pos, int, error) {
	series := make([]remotewrite.Series, 0, exportMaxSeries)
	var pushErr error
	push := func() {
		if pushErr != nil || len(series) == 0 {
			return
		}
		err := remotewrite.Push(ctx, c, url, remotewrite.Encode(series))
		if errors.Is(err, remotewrite.ErrRejected) {
			// Retrying cannot change it; holding the cursor would stop
			// every later batch.
			s.log.Error("export rejected, series skipped", "series", len(series), "err", err)
			err = nil
		}
		pushErr = err
		clear(series)
		series = series[:0]
	}
	next, n := cursor, 0
	err := s.store.Scan(cursor, func(at time.Time, rec []byte, end store.Pos) error {
		if n == exportMaxBatches {
			return errFull
		}
		if b, ok := s.openStored(rec, nil); ok {
			restamp(b, at, s.cfg.MaxSkew)
			batchSeries(b, func(x remotewrite.Series) {
				if series = append(series, x); len(series) == exportMaxSeries {
					push()
				}
			})
		}
		next, n = end, n+1
		return pushErr
	})
	push()
	if err == nil || errors.Is(err, errFull) {
		err = pushErr
	}
	if err != nil {
		return cursor, 0, err
	}
	return next, n, nil
}

// batchSeries is a batch as Prometheus series, labelled with node, region,
// service and route, each sample at its own time: node gauges, service
// gauges, the window's responses by status class, its circuit overflows by
// reason and its latency
// histogram as _bucket/_sum/_count, and
// access records counted per route, service and status at the batch's time.
// It hands emit one series at a time.
func batchSeries(b *wire.Batch, emit func(remotewrite.Series)) {
	add := func(name string, v float64, t time.Time, labels ...string) {
		ls := []remotewrite.Label{{Name: "__name__", Value: name}}
		for i := 0; i+1 < len(labels); i += 2 {
			ls = append(ls, remotewrite.Label{Name: labels[i], Value: labels[i+1]})
		}
		emit(remotewrite.Series{Labels: ls, Samples: []remotewrite.Sample{{Value: v, Time: t}}})
	}
	region := ""
	for i := range b.Samples {
		smp := &b.Samples[i]
		region = smp.Region
		node := []string{"node", b.Node, "region", smp.Region}
		add("perigee_node_rps", smp.RPS, smp.Time, node...)
		add("perigee_node_cpu_cores", smp.CPU, smp.Time, node...)
		add("perigee_node_in_flight", float64(smp.InFlight), smp.Time, node...)
		add("perigee_node_memory_bytes", float64(smp.MemBytes), smp.Time, node...)
		windowClasses := func(name string, c telemetry.StatusClasses, labels []string) {
			for i, n := range c {
				if n > 0 {
					add(name, float64(n), smp.Time, append(slices.Clone(labels), "class", className(i))...)
				}
			}
		}
		windowClasses("perigee_node_window_responses", smp.Status, node)
		for _, name := range slices.Sorted(maps.Keys(smp.Services)) {
			v := smp.Services[name]
			svc := append(slices.Clone(node), "service", name)
			add("perigee_service_rps", v.RPS, smp.Time, svc...)
			add("perigee_service_error_ratio", v.ErrorRate, smp.Time, svc...)
			add("perigee_service_healthy_backends", float64(v.HealthyBackends), smp.Time, svc...)
			windowClasses("perigee_service_window_responses", v.Status, svc)
			for _, reason := range slices.Sorted(maps.Keys(v.Overflow)) {
				add("perigee_service_window_circuit_overflows", float64(v.Overflow[reason]), smp.Time, append(slices.Clone(svc), "reason", reason)...)
			}
			var cum uint64
			for i, c := range v.Latency.Counts {
				cum += c
				if c == 0 && i != len(v.Latency.Counts)-1 {
					continue
				}
				add("perigee_service_window_latency_seconds_bucket", float64(cum), smp.Time, append(slices.Clone(svc), "le", strconv.FormatFloat(telemetry.BucketUpper(i).Seconds(), 'g', -1, 64))...)
			}
			add("perigee_service_window_latency_seconds_bucket", float64(cum), smp.Time, append(slices.Clone(svc), "le", "+Inf")...)
			add("perigee_service_window_latency_seconds_sum", float64(v.Latency.SumUS)/1e6, smp.Time, svc...)
			add("perigee_service_window_latency_seconds_count", float64(cum), smp.Time, svc...)
		}
	}
	type key struct{ route, service, status string }
	access := map[key]int{}
	for _, a := range b.Access {
		access[key{a.Route, a.Service, strconv.Itoa(a.Status)}]++
	}
	for k, n := range access {
		add("perigee_access_records", float64(n), b.Created, "node", b.Node, "region", region, "service", k.service, "route", k.route, "status", k.status)
	}
}

// loadCursor reads where the export left off. Without a cursor it starts
// from the oldest segment, which sends again what was sent: no loss.
func (s *server) loadCursor() store.Pos {
	path := filepath.Join(s.cfg.DataDir, exportCursorFile)
	b, err := files.Read(path, cursorBytes)
	if err == nil && len(b) != cursorBytes {
		err = fmt.Errorf("%s: %d bytes, a cursor is %d", path, len(b), cursorBytes)
	}
	if err == nil && binary.LittleEndian.Uint64(b[8:]) > math.MaxInt64 {
		err = fmt.Errorf("%s: offset %d past any segment", path, binary.LittleEndian.Uint64(b[8:]))
	}
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Error("export cursor unreadable, exporting the whole store again", "err", err)
		}
		return store.Pos{}
	}
	return store.Pos{Seg: binary.LittleEndian.Uint64(b), Off: int64(binary.LittleEndian.Uint64(b[8:]))}
}

// cursorBytes is the cursor file's size: segment and offset, u64 LE each.
const cursorBytes = 16

func (s *server) saveCursor(p store.Pos) error {
	b := binary.LittleEndian.AppendUint64(nil, p.Seg)
	b = binary.LittleEndian.AppendUint64(b, uint64(p.Off))
	if _, err := files.WriteAtomic(filepath.Join(s.cfg.DataDir, exportCursorFile), b); err != nil {
		return fmt.Errorf("export cursor: %w", err)
	}
	return nil
}
