package aggregator_test

import (
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/files/filestest"
	"perigee/logtest"
	"perigee/memtest"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// The files the aggregator reads back from its data directory (the dedup
// checkpoint at start, the export cursor, a segment's rollup on a query)
// are read within what it writes there: each was read whole, so a sparse
// file of 256 MiB put under one of their names took 256 MiB of heap. Each
// is refused now by its size, with a line naming it, and the aggregator
// goes on as it would without it: the whole store read for the dedup
// state, the export from the start, the segment's records for the query.
func TestTamperedDataFilesAreRefusedUnread(t *testing.T) {
	dir := t.TempDir()
	withExport := func(c *aggregator.Config) {
		c.DataDir, c.MemoryWindow = dir, time.Minute
		c.Export = &aggregator.Export{URL: "http://127.0.0.1:1/api/v1/write"} // nothing listens: the cursor stays
	}
	a := startAggregator(t, withExport)
	s := sample("node-a", 1)
	s.Time = time.Now().Add(-10 * time.Minute)
	if status, msg := post(t, a, tokenA, seal(t, &wire.Batch{Node: "node-a", Seq: 1, Created: time.Now(), Samples: []telemetry.NodeSample{s}})); status != 200 {
		t.Fatalf("post: %d %s", status, msg)
	}
	a.stop() // which writes the checkpoint and the rollups
	tampered := []string{"dedup.state", "export.cursor", "rollup/seg-0000000001.1m"}
	for _, name := range tampered {
		filestest.Sparse(t, filepath.Join(dir, name), 256<<20)
	}
	var log logtest.Buffer
	var status int
	var body []byte
	grew := memtest.PeakGrowthDuring(func() {
		a = startAggregatorLogging(t, withExport, slog.New(slog.NewTextHandler(&log, nil)))
		status, body = a.get(t, "/v1/series?window=1h&step=1m")
		eventually(t, "the export cursor to be read", func() bool { return strings.Contains(log.String(), "export.cursor") })
	})
	t.Logf("the heap peaked %.1f MiB higher", float64(grew)/(1<<20))
	if status != 200 || !strings.Contains(string(body), `"source":"1m"`) || !strings.Contains(string(body), `"nodes":1`) {
		t.Fatalf("series with a tampered rollup: %d %s", status, body)
	}
	for _, name := range tampered {
		if !strings.Contains(log.String(), filepath.Join(dir, name)+": over") {
			t.Errorf("no line says %s is refused for its size:\n%s", name, log.String())
		}
	}
	if grew > 64<<20 {
		t.Fatalf("the heap grew %d MiB reading files of 256 MiB", grew>>20)
	}
}

// A checkpoint or an export cursor whose store position is past what an
// offset can be (an offset of 2^63 and more, read as negative) made the
// scan from it slice before the segment's start: the start, or the
// exporter's goroutine and with it the process, panicked. Such a position
// is refused as malformed now: the dedup state comes from the whole store,
// the export starts over.
func TestTamperedStorePositionsAreRefused(t *testing.T) {
	dir := t.TempDir()
	withExport := func(c *aggregator.Config) {
		c.DataDir = dir
		c.Export = &aggregator.Export{URL: "http://127.0.0.1:1/api/v1/write"}
	}
	a := startAggregator(t, withExport)
	if status, msg := post(t, a, tokenA, seal(t, &wire.Batch{Node: "node-a", Seq: 1, Created: time.Now(), Samples: []telemetry.NodeSample{sample("node-a", 1)}})); status != 200 {
		t.Fatalf("post: %d %s", status, msg)
	}
	a.stop()
	checkpoint := binary.AppendUvarint([]byte("PGDD\x01"), 1)
	checkpoint = binary.AppendUvarint(checkpoint, 1<<63)
	checkpoint = binary.AppendUvarint(checkpoint, 0) // no nodes
	cursor := binary.LittleEndian.AppendUint64(nil, 1)
	cursor = binary.LittleEndian.AppendUint64(cursor, 1<<63)
	for name, b := range map[string][]byte{"dedup.state": checkpoint, "export.cursor": cursor} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	var log logtest.Buffer
	a = startAggregatorLogging(t, withExport, slog.New(slog.NewTextHandler(&log, nil)))
	eventually(t, "the export to try the stored batch", func() bool { return strings.Contains(log.String(), "export failed") })
	// The whole store was read for the dedup state: the batch is known.
	if status, msg := post(t, a, tokenA, seal(t, &wire.Batch{Node: "node-a", Seq: 1, Created: time.Now(), Samples: []telemetry.NodeSample{sample("node-a", 1)}})); status != 200 || !strings.Contains(msg, "duplicate") {
		t.Fatalf("the stored batch again: %d %s", status, msg)
	}
	for _, want := range []string{"dedup checkpoint unreadable", "export cursor unreadable"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("no line says %q:\n%s", want, log.String())
		}
	}
}
