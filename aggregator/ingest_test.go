package aggregator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"perigee/aggregator"
	"perigee/telemetry"
	"perigee/telemetry/ship"
	"perigee/telemetry/wire"
)

func seal(t testing.TB, b *wire.Batch) []byte {
	s, err := wire.NewSealer(wire.CodecZstd, wire.DefaultLevel)
	if err != nil {
		t.Fatal(err)
	}
	return s.Seal(b)
}

func post(t testing.TB, a *agg, token string, body []byte) (int, string) {
	t.Helper()
	status, _, msg := postAnswer(t, a, token, body)
	return status, msg
}

// postAnswer is post with the answer's header.
func postAnswer(t testing.TB, a *agg, token string, body []byte) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, a.url("/v1/ingest"), bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(msg)
}

func TestIngestRefusesBadInputAndKeepsServing(t *testing.T) {
	a := startAggregator(t, func(c *aggregator.Config) { c.MaxDecompressed = 1 << 20 })
	now := time.Now()
	good := seal(t, &wire.Batch{Node: "node-a", Seq: 1, Created: now, Samples: []telemetry.NodeSample{sample("node-a", 7)}})
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/2] ^= 0xff
	zw, _ := zstd.NewWriter(nil)
	bomb := wire.AppendFrame(nil, wire.Frame{Node: "node-a", Seq: 2, Created: now, Codec: wire.CodecZstd, RawLen: 1000,
		Body: zw.EncodeAll(make([]byte, 256<<20), nil)})
	unknownDict, err := wire.ParseFrame(good, -1)
	if err != nil {
		t.Fatal(err)
	}
	unknownDict.Dict = wire.NewestDict + 1 // as from a newer node
	tooOld := seal(t, &wire.Batch{Node: "node-a", Seq: 5, Created: now.AddDate(0, -1, 0), Samples: []telemetry.NodeSample{sample("node-a", 1)}})

	cases := []struct {
		name, token string
		body        []byte
		status      int
		result      string
	}{
		{"no token", "", good, 401, "unauthorized"},
		{"wrong token", "not-a-token-of-anyone", good, 401, "unauthorized"},
		{"other node's token", tokenB, good, 403, "node_mismatch"},
		{"garbage", tokenA, []byte("hello"), 400, "malformed"},
		{"corrupt frame", tokenA, corrupt, 400, "corrupt"},
		{"oversized body", tokenA, make([]byte, 2<<20), 413, "too_large"},
		{"zip bomb", tokenA, bomb, 413, "too_large"},
		{"unknown dictionary", tokenA, wire.AppendFrame(nil, unknownDict), 415, "unknown_dict"},
		{"older than retention", tokenA, tooOld, 422, "too_old"},
		{"good", tokenA, good, 200, "stored"},
		{"replayed", tokenA, good, 200, "duplicate"},
	}
	for _, c := range cases {
		status, msg := post(t, a, c.token, c.body)
		if status != c.status || !strings.Contains(msg, c.result) {
			t.Errorf("%s: got %d %q, want %d %s", c.name, status, msg, c.status, c.result)
		}
	}
	m := a.metrics(t)
	for result, want := range map[string]string{"unauthorized": "2", "node_mismatch": "1", "malformed": "1", "corrupt": "1",
		"too_large": "2", "unknown_dict": "1", "too_old": "1", "stored": "1", "duplicate": "1"} {
		if got := metricValue(m, `perigee_aggregator_batches_total{result="`+result+`"}`); got != want {
			t.Errorf("counter %s = %s, want %s", result, got, want)
		}
	}
	// The replay did not count twice, and the bomb's node is not invented.
	n, ok := fleetNode(t, a, "node-a")
	if !ok || n.Batches != 1 || n.RPS != 7 {
		t.Fatalf("node-a after replay: %+v (found %v)", n, ok)
	}
	if got := metricValue(m, "perigee_aggregator_records_total"); got != "1" {
		t.Errorf("records_total = %s, want 1", got)
	}
}

func TestShipperMovesToHTTP3AndFleetShowsIt(t *testing.T) {
	a := startAggregator(t, nil)
	s := newShipper(t, a, "node-a", tokenA, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	i := 0
	eventually(t, "a batch acknowledged over HTTP/3", func() bool {
		i++
		s.AddSample(sample("node-a", i))
		s.AddDecision(telemetry.Decision{Time: time.Now(), Region: "eu-west", Policy: "p", Action: "weight", Reason: "test"})
		return s.Stats().LastProto == "HTTP/3.0"
	})
	eventually(t, "node-a in the fleet", func() bool {
		n, ok := fleetNode(t, a, "node-a")
		return ok && n.Status == "up" && n.Region == "eu-west" && n.P99MS > 0
	})
	var d struct{ Decisions []telemetry.Decision }
	a.getJSON(t, "/v1/decisions?node=node-a&limit=5", &d)
	if len(d.Decisions) == 0 || d.Decisions[0].Node != "node-a" || d.Decisions[0].Reason != "test" {
		t.Fatalf("decisions: %+v", d.Decisions)
	}
	var series struct{ Points []aggregator.SeriesPoint }
	a.getJSON(t, "/v1/series?scope=region&name=eu-west&window=5m&step=1s", &series)
	if len(series.Points) == 0 || series.Points[len(series.Points)-1].RPS <= 0 {
		t.Fatalf("region series: %+v", series.Points)
	}
	m := a.metrics(t)
	if got := metricValue(m, `perigee_fleet_nodes{status="up"}`); got != "1" {
		t.Errorf("fleet nodes up = %s", got)
	}
	for _, path := range []string{"/v1/series?scope=moon", "/v1/series?scope=node", "/v1/decisions?limit=-1", "/v1/series?step=1ms"} {
		resp, err := a.client.Get(a.url(path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", path, resp.StatusCode)
		}
	}
}

// A batch stored before a restart is still known after it: the dedup set
// is rebuilt from the store, so a resend cannot count twice.
func TestDedupSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	frame := seal(t, &wire.Batch{Node: "node-a", Seq: 99, Created: time.Now(), Samples: []telemetry.NodeSample{sample("node-a", 3)}})
	a := startAggregator(t, func(c *aggregator.Config) { c.DataDir = dir })
	if status, msg := post(t, a, tokenA, frame); status != 200 || !strings.Contains(msg, "stored") {
		t.Fatalf("first post: %d %s", status, msg)
	}
	a.stop()
	a = startAggregator(t, func(c *aggregator.Config) { c.DataDir = dir })
	if status, msg := post(t, a, tokenA, frame); status != 200 || !strings.Contains(msg, "duplicate") {
		t.Fatalf("post after restart: %d %s", status, msg)
	}
	if n, ok := fleetNode(t, a, "node-a"); !ok || n.Batches != 1 || n.RPS != 3 {
		t.Fatalf("node-a after restart: %+v", n)
	}
}

// A node whose clock runs ten minutes fast keeps its telemetry: the
// aggregator stores the batch, moves its times back by the node's offset
// (so its samples land where they belong), clamps a record still in the
// future to the time of arrival, and shows the offset; a restart re-stamps
// the stored batch the same way.
func TestFastClockIsAcceptedAndRestamped(t *testing.T) {
	dir := t.TempDir()
	a := startAggregator(t, func(c *aggregator.Config) { c.DataDir = dir })
	now := time.Now()
	ahead := now.Add(10 * time.Minute)
	s := sample("node-a", 5)
	s.Time = ahead
	frame := seal(t, &wire.Batch{Node: "node-a", Seq: 1, Created: ahead, Samples: []telemetry.NodeSample{s},
		Decisions: []telemetry.Decision{{Time: ahead.Add(24 * time.Hour), Action: "scale", Reason: "far ahead"}}})
	if status, msg := post(t, a, tokenA, frame); status != 200 || !strings.Contains(msg, "stored") {
		t.Fatalf("batch 10 min ahead: %d %s", status, msg)
	}
	check := func(when string) {
		n, ok := fleetNode(t, a, "node-a")
		if !ok || n.ClockSkewSeconds < 590 || n.ClockSkewSeconds > 610 {
			t.Fatalf("%s: node-a clock skew %v s (found %v), want about 600", when, n.ClockSkewSeconds, ok)
		}
		if d := n.SampledAt.Sub(now); d < -5*time.Second || d > 5*time.Second {
			t.Fatalf("%s: sample re-stamped to %v from now, want about 0", when, d)
		}
		var ds struct{ Decisions []telemetry.Decision }
		a.getJSON(t, "/v1/decisions?node=node-a", &ds)
		if len(ds.Decisions) != 1 || ds.Decisions[0].Time.After(time.Now()) {
			t.Fatalf("%s: decisions %+v, want one clamped to arrival", when, ds.Decisions)
		}
	}
	check("after ingest")
	if got := metricValue(a.metrics(t), `perigee_node_clock_skew_seconds{node="node-a",region="eu-west"}`); !strings.HasPrefix(got, "6") && !strings.HasPrefix(got, "59") {
		t.Errorf("perigee_node_clock_skew_seconds = %s", got)
	}
	a.stop()
	a = startAggregator(t, func(c *aggregator.Config) { c.DataDir = dir })
	check("after restart")
}

// The aggregator keeps only the memory window in memory; a longer query
// at a step no rollup tier serves (not whole minutes) reads the store and
// still sees every sample, and a short one does not see what fell out of
// the window.
func TestQueriesOlderThanMemoryWindowReadTheStore(t *testing.T) {
	a := startAggregator(t, func(c *aggregator.Config) { c.MemoryWindow = time.Minute })
	now := time.Now()
	for i, age := range []time.Duration{40 * time.Minute, 30 * time.Minute, 20 * time.Minute, 0} {
		s := sample("node-a", 10*(i+1))
		s.Time = now.Add(-age)
		frame := seal(t, &wire.Batch{Node: "node-a", Seq: uint64(i + 1), Created: now, Samples: []telemetry.NodeSample{s}})
		if status, msg := post(t, a, tokenA, frame); status != 200 {
			t.Fatalf("post: %d %s", status, msg)
		}
	}
	var long, short struct {
		Source string
		Points []aggregator.SeriesPoint
	}
	a.getJSON(t, "/v1/series?scope=node&name=node-a&window=1h&step=30s", &long)
	a.getJSON(t, "/v1/series?scope=node&name=node-a&window=1m&step=10s", &short)
	var rps []float64
	for _, p := range long.Points {
		rps = append(rps, p.RPS)
	}
	if long.Source != "store" || fmt.Sprint(rps) != "[10 20 30 40]" {
		t.Fatalf("1h series from %s: rps %v, want [10 20 30 40] from the store", long.Source, rps)
	}
	if short.Source != "memory" || len(short.Points) != 1 || short.Points[0].RPS != 40 {
		t.Fatalf("1m series from %s: %+v, want the one recent sample from memory", short.Source, short.Points)
	}
}

// Dedup state comes from its checkpoint, not from reading the store: with
// the segments gone after a clean stop, a resend is still a duplicate.
func TestDedupStateComesFromCheckpoint(t *testing.T) {
	dir := t.TempDir()
	a := startAggregator(t, func(c *aggregator.Config) { c.DataDir = dir })
	var frames [][]byte
	for i := range 20 {
		f := seal(t, &wire.Batch{Node: "node-a", Seq: uint64(1000 + i), Created: time.Now(), Samples: []telemetry.NodeSample{sample("node-a", i)}})
		if status, _ := post(t, a, tokenA, f); status != 200 {
			t.Fatal(status)
		}
		frames = append(frames, f)
	}
	a.stop()
	segs, _ := filepath.Glob(filepath.Join(dir, "store", "seg-*.log"))
	for _, p := range segs {
		os.Remove(p)
	}
	a = startAggregator(t, func(c *aggregator.Config) { c.DataDir = dir })
	for _, f := range frames {
		if status, msg := post(t, a, tokenA, f); status != 200 || !strings.Contains(msg, "duplicate") {
			t.Fatalf("resend after restart: %d %s", status, msg)
		}
	}
	var v aggregator.FleetView
	a.getJSON(t, "/v1/fleet", &v)
	if v.Batches != 20 || v.Records != 20 {
		t.Fatalf("fleet counts %d batches, %d records; want 20, 20", v.Batches, v.Records)
	}
}

// A series window longer than the retention asks for data the embedded
// store no longer holds: the answer says so, and where it is, rather than
// a series that silently starts late.
func TestSeriesBeyondRetentionSaysWhereTheDataIs(t *testing.T) {
	a := startAggregator(t, func(c *aggregator.Config) {
		c.Retention = 24 * time.Hour
		c.Export = &aggregator.Export{URL: "http://127.0.0.1:1/api/v1/write"}
	})
	resp, err := a.client.Get(a.url("/v1/series?window=48h&step=1h"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Error string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body.Error, "retention") || !strings.Contains(body.Error, "http://127.0.0.1:1/api/v1/write") {
		t.Fatalf("48h series with 24h retention: %s %q, want 422 naming the retention and the export engine", resp.Status, body.Error)
	}
	var ok struct{ Points []aggregator.SeriesPoint }
	a.getJSON(t, "/v1/series?window=24h&step=1h", &ok)
}

// An answer over HTTP/3 that keeps the batch (here 401: the node's token
// is wrong) came from the aggregator, so QUIC got through: the batch is
// not posted again over TCP at once. It was, so every refusal for now
// over HTTP/3 (429 of a busy aggregator, 507 of a full store) was a
// second post at once, and a Retry-After was answered by another post.
func TestRefusalOverHTTP3IsNotPostedAgainOverTCP(t *testing.T) {
	a := startAggregator(t, nil)
	spool := t.TempDir()
	s := newShipper(t, a, "node-a", "not-the-token-of-node-a-0123", func(c *ship.Config) { c.Spool.Dir, c.RetryMax = spool, 50*time.Millisecond })
	s.AddEvent(telemetry.Event{Time: time.Now(), Kind: "refused"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	eventually(t, "attempts over HTTP/3", func() bool { return s.Stats().LastProto == "HTTP/3.0" && s.Stats().BytesSent > 0 })
	entries, err := os.ReadDir(spool)
	if err != nil {
		t.Fatal(err)
	}
	var frame int64
	for _, e := range entries {
		if info, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".batch") {
			frame = info.Size()
		}
	}
	if frame == 0 {
		t.Fatalf("no batch in the spool: %v", entries)
	}
	eventually(t, "ten attempts", func() bool { return s.Stats().BytesSent >= uint64(10*frame) })
	cancel()
	<-done
	attempts := s.Stats().BytesSent / uint64(frame)
	posts, _ := strconv.ParseUint(metricValue(a.metrics(t), `perigee_aggregator_batches_total{result="unauthorized"}`), 10, 64)
	if posts > attempts {
		t.Fatalf("%d attempts made %d posts", attempts, posts)
	}
}
