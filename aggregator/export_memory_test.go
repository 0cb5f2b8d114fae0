package aggregator

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"google.golang.org/protobuf/encoding/protowire"

	"perigee/aggregator/remotewrite"
	"perigee/aggregator/store"
	"perigee/memtest"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// A batch within every decoding bound still turns into as many series as
// its services have latency buckets: a 5 KB frame of 4,500 services with
// all 312 buckets filled is 1.4 million series, and the exporter built
// every series of up to 500 batches before its one push (one such batch
// took the heap past 400 MiB). It pushes in chunks of at most
// exportMaxSeries series now, and the engine still gets every one.
func TestExportPushesAHugeBatchInBoundedChunks(t *testing.T) {
	s := memoryServer(t, 15*time.Minute)
	now := time.Now()
	b := &wire.Batch{Node: "hostile", Seq: 1, Created: now}
	counts := make([]uint64, telemetry.NumBuckets)
	for i := range counts {
		counts[i] = 1
	}
	for j := range 3 {
		smp := telemetry.NodeSample{Node: "hostile", Region: "r", Time: now.Add(time.Duration(j) * time.Millisecond), Services: map[string]telemetry.ServiceSample{}}
		for k := range 1500 {
			smp.Services[fmt.Sprint(k)] = telemetry.ServiceSample{RPS: 1, Latency: telemetry.HistogramSnapshot{Counts: counts}}
		}
		b.Samples = append(b.Samples, smp)
	}
	sealer, err := wire.NewSealer(wire.CodecZstd, wire.DefaultLevel)
	if err != nil {
		t.Fatal(err)
	}
	frame := sealer.Seal(b)
	f, err := wire.ParseFrame(frame, -1)
	if err != nil {
		t.Fatal(err)
	}
	opened, err := s.opener.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	batchSeries(opened, func(remotewrite.Series) { want++ })
	if err := s.keep(now, frame, opened); err != nil {
		t.Fatal(err)
	}
	opened = nil

	var pushes, pushed atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	engine := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		series, err := countSeries(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		pushes.Add(1)
		pushed.Add(int64(series))
		w.WriteHeader(http.StatusNoContent)
	})}
	go engine.Serve(ln)
	t.Cleanup(func() { engine.Close() })

	var n int
	grew := memtest.PeakGrowthDuring(func() {
		_, n, err = s.exportOnce(context.Background(), &http.Client{Timeout: time.Minute}, "http://"+ln.Addr().String()+"/api/v1/write", store.Pos{})
	})
	if err != nil || n != 1 {
		t.Fatalf("export: %d batches, %v", n, err)
	}
	t.Logf("%d-byte frame: %d series in %d pushes; heap peaked %.1f MiB above where it started", len(frame), pushed.Load(), pushes.Load(), float64(grew)/(1<<20))
	if pushed.Load() != int64(want) {
		t.Fatalf("pushed %d series, the batch has %d", pushed.Load(), want)
	}
	if grew > 128<<20 {
		t.Fatalf("heap peaked %.1f MiB above where it started", float64(grew)/(1<<20))
	}
}

// countSeries counts the time series of a snappy-compressed WriteRequest.
func countSeries(body []byte) (int, error) {
	b, err := snappy.Decode(nil, body)
	if err != nil {
		return 0, err
	}
	n := 0
	for len(b) > 0 {
		num, typ, tagLen := protowire.ConsumeTag(b)
		if tagLen < 0 {
			return 0, protowire.ParseError(tagLen)
		}
		fieldLen := protowire.ConsumeFieldValue(num, typ, b[tagLen:])
		if fieldLen < 0 {
			return 0, protowire.ParseError(fieldLen)
		}
		if num == 1 {
			n++
		}
		b = b[tagLen+fieldLen:]
	}
	return n, nil
}
