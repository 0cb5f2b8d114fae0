package ship_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/telemetry"
	"perigee/telemetry/ship"
	"perigee/telemetry/wire"

	"perigee/units"
)

const token = "node-token-0123456789abcdef"

func writeToken(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNewRejectsBadConfig(t *testing.T) {
	tok := writeToken(t)
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	// A token that no request can carry (a file of two lines, say) was
	// taken, and every post failed on it for good.
	twoLines := filepath.Join(t.TempDir(), "two-lines")
	os.WriteFile(twoLines, []byte(token+"\nsecond-line\n"), 0o600)
	cases := map[string]struct {
		cfg  ship.Config
		want string
	}{
		"plain http":          {ship.Config{Aggregator: "http://x:1", TokenFile: tok, Spool: ship.Spool{Dir: t.TempDir()}, Node: "n"}, "https://"},
		"no node":             {ship.Config{Aggregator: "https://x:1", TokenFile: tok, Spool: ship.Spool{Dir: t.TempDir()}}, "node"},
		"no spool":            {ship.Config{Aggregator: "https://x:1", TokenFile: tok, Node: "n"}, "spool.dir"},
		"missing token":       {ship.Config{Aggregator: "https://x:1", TokenFile: "/nonexistent", Spool: ship.Spool{Dir: t.TempDir()}, Node: "n"}, "token_file"},
		"empty token":         {ship.Config{Aggregator: "https://x:1", TokenFile: empty, Spool: ship.Spool{Dir: t.TempDir()}, Node: "n"}, "empty"},
		"token of two lines":  {ship.Config{Aggregator: "https://x:1", TokenFile: twoLines, Spool: ship.Spool{Dir: t.TempDir()}, Node: "n"}, "control character"},
		"plain http failover": {ship.Config{Aggregator: "https://x:1", Failover: []string{"http://y:1"}, TokenFile: tok, Spool: ship.Spool{Dir: t.TempDir()}, Node: "n"}, "failover[0]"},
		"tiny interval":       {ship.Config{Aggregator: "https://x:1", TokenFile: tok, Spool: ship.Spool{Dir: t.TempDir()}, Node: "n", Interval: units.Duration(time.Nanosecond)}, "interval"},
	}
	for name, c := range cases {
		if _, err := ship.New(c.cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error about %s", name, err, c.want)
		}
	}
	cfg := ship.Config{TokenFile: twoLines}
	if err, _ := cfg.CheckFiles(); err == nil || !strings.Contains(err.Error(), "control character") || strings.Contains(err.Error(), token) {
		t.Errorf("CheckFiles on a token of two lines: %v, want an error about a control character that does not show the token", err)
	}
}

// Records beyond the in-memory bound are refused and counted, not queued
// without limit and never blocking the caller.
func TestAddDropsBeyondBoundAndCounts(t *testing.T) {
	s, err := ship.New(ship.Config{Aggregator: "https://127.0.0.1:1", TokenFile: writeToken(t), Spool: ship.Spool{Dir: t.TempDir()},
		Node: "n", MaxPending: 100}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for range 250 {
		s.AddAccess(telemetry.AccessRecord{Time: time.Now(), Path: "/"})
	}
	if st := s.Stats(); st.PendingRecords != 100 || st.DroppedRecords != 150 {
		t.Fatalf("pending %d dropped %d, want 100 and 150", st.PendingRecords, st.DroppedRecords)
	}
}

// serve runs an aggregator of cfg until the test ends, and returns it.
func serve(t *testing.T, cfg aggregator.Config) *aggregator.Server {
	t.Helper()
	a, err := aggregator.NewServer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	return a
}

// run runs s until the test ends.
func run(t *testing.T, s *ship.Shipper) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With the aggregator away, batches pile up in the spool up to its bound;
// the oldest are dropped and counted. The node restarts with a full spool,
// the aggregator appears, and every batch still spooled is delivered.
func TestSpoolBoundsDropsOldestAndDeliversAfterRestart(t *testing.T) {
	addr := freeAddr(t)
	dataDir := t.TempDir()
	caFile := filepath.Join(dataDir, aggregator.DevCertFile)
	// The certificate is made before the aggregator runs, so the node can
	// be configured to trust it while the aggregator is still absent.
	cfg := aggregator.Config{Listen: addr, DataDir: dataDir, Tokens: map[string]string{"node-a": token}}
	pre, err := aggregator.NewServer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	preCtx, preStop := context.WithCancel(context.Background())
	preStop()
	if err := pre.Serve(preCtx); err != nil {
		t.Fatal(err)
	}

	spoolDir := t.TempDir()
	shipCfg := ship.Config{Aggregator: "https://" + addr, TokenFile: writeToken(t), Spool: ship.Spool{Dir: spoolDir, Max: 16 << 10},
		Interval: units.Duration(10 * time.Millisecond), Node: "node-a", Region: "eu-west", CAFile: caFile, RetryMax: 200 * time.Millisecond}
	s, err := ship.New(shipCfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	i := 0
	eventually(t, "the spool to overflow", func() bool {
		i++
		s.AddEvent(telemetry.Event{Time: time.Now(), Kind: "tick", Fields: map[string]string{"i": strings.Repeat("x", i%97)}})
		return s.Stats().DroppedBatches >= 3
	})
	cancel()
	<-done
	st := s.Stats()
	if st.SpoolBytes > int64(shipCfg.Spool.Max) || st.SpooledBatches == 0 || st.BatchesAcked != 0 {
		t.Fatalf("after overflow: %+v", st)
	}

	serve(t, cfg)

	// A new shipper on the same spool: the restarted node.
	s2, err := ship.New(shipCfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.Stats().SpooledBatches; got != st.SpooledBatches {
		t.Fatalf("restarted shipper sees %d spooled batches, want %d", got, st.SpooledBatches)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { defer close(done2); s2.Run(ctx2) }()
	defer func() { cancel2(); <-done2 }()
	eventually(t, "the spool to drain", func() bool { return s2.Stats().SpooledBatches == 0 })
	if got := s2.Stats().BatchesAcked; got != uint64(st.SpooledBatches) {
		t.Fatalf("acknowledged %d, want the %d spooled", got, st.SpooledBatches)
	}
}

// A batch the aggregator can never accept (400, 413, 422) is dropped and
// counted, not resent forever; any other answer keeps it for a retry: a
// 404 from a proxy in the way, a 415 from an older aggregator, a 429.
func TestRefusedBatchIsDroppedAndCounted(t *testing.T) {
	var calls atomic.Int32
	agg := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			return // the shipper asking for the time at start
		}
		// As the aggregator's every answer does: a refusal without it is
		// a proxy's.
		w.Header().Set(ship.TimeHeader, strconv.FormatInt(time.Now().UnixMilli(), 10))
		switch calls.Add(1) {
		case 1:
			http.Error(w, "too_old: batch older than retention", http.StatusUnprocessableEntity)
		case 2:
			http.Error(w, "no such path", http.StatusNotFound)
		case 3:
			http.Error(w, "unknown_dict: upgrade the aggregator", http.StatusUnsupportedMediaType)
		case 4:
			http.Error(w, "slow down", http.StatusTooManyRequests)
		default:
			fmt.Fprintln(w, `{"status":"stored"}`)
		}
	}))
	defer agg.Close()
	s, err := ship.New(ship.Config{Aggregator: agg.URL, TokenFile: writeToken(t), Spool: ship.Spool{Dir: t.TempDir()}, Interval: units.Duration(10 * time.Millisecond),
		Node: "node-a", InsecureSkipVerify: true, RetryMax: 50 * time.Millisecond}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)

	s.AddEvent(telemetry.Event{Time: time.Now(), Kind: "first"})
	eventually(t, "the first batch to be refused", func() bool { return s.Stats().BatchesRefused == 1 })
	s.AddEvent(telemetry.Event{Time: time.Now(), Kind: "second"})
	eventually(t, "the second batch to be acknowledged", func() bool { return s.Stats().BatchesAcked == 1 })
	st := s.Stats()
	if st.BatchesRefused != 1 || st.DroppedBatches != 1 || st.SpooledBatches != 0 || calls.Load() != 5 {
		t.Fatalf("refused %d, dropped %d, spooled %d after %d posts; want 1, 1, 0 after 5 (422, 404, 415, 429, 200)",
			st.BatchesRefused, st.DroppedBatches, st.SpooledBatches, calls.Load())
	}
	if st.RecordsAcked != (ship.Records{Events: 1}) {
		t.Fatalf("records acknowledged %+v, want the one event of the second batch", st.RecordsAcked)
	}
}

// diskUsage is what the files in dir take on disk, as du counts it.
func diskUsage(t *testing.T, dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		total += info.Sys().(*syscall.Stat_t).Blocks * 512
	}
	return total
}

// The spool's bound is on what it takes on disk, not on the bytes of its
// batches: a file of 150 bytes takes a 4 KiB block (issue 14: a 1 KiB
// spool took 40 KiB). Stats reports the same figure.
func TestSpoolBoundIsDiskUsage(t *testing.T) {
	spoolDir := t.TempDir()
	const max = 32 << 10
	s, err := ship.New(ship.Config{Aggregator: "https://127.0.0.1:1", TokenFile: writeToken(t), Spool: ship.Spool{Dir: spoolDir, Max: units.ByteSize(max)},
		Interval: units.Duration(10 * time.Millisecond), Node: "node-a", RetryMax: time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	eventually(t, "the spool to overflow", func() bool {
		s.AddEvent(telemetry.Event{Time: time.Now(), Kind: "tick"})
		return s.Stats().DroppedBatches >= 10
	})
	cancel()
	<-done
	st := s.Stats()
	if du := diskUsage(t, spoolDir); du > max || st.SpoolBytes != du {
		t.Fatalf("spool takes %d bytes on disk and reports %d, bound %d", du, st.SpoolBytes, max)
	}
}

// A node whose clock runs an hour slow learns the offset from the
// aggregator's Perigee-Time and seals its batches with corrected times,
// the batch's and its records' alike.
func TestSlowClockIsCorrectedBeforeSealing(t *testing.T) {
	opener, err := wire.NewOpener(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *wire.Batch, 16)
	agg := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(ship.TimeHeader, strconv.FormatInt(time.Now().UnixMilli(), 10))
		if r.Method != http.MethodPost {
			return
		}
		body, _ := io.ReadAll(r.Body)
		f, err := wire.ParseFrame(body, 1<<20)
		if err == nil {
			var b *wire.Batch
			if b, err = opener.Open(f); err == nil {
				got <- b
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	}))
	defer agg.Close()
	slow := func() time.Time { return time.Now().Add(-time.Hour) }
	s, err := ship.New(ship.Config{Aggregator: agg.URL, TokenFile: writeToken(t), Spool: ship.Spool{Dir: t.TempDir()}, Interval: units.Duration(10 * time.Millisecond),
		Node: "node-a", InsecureSkipVerify: true, Clock: slow}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "the offset to be learned", func() bool { return s.Stats().ClockOffset < -59*time.Minute })
	s.AddEvent(telemetry.Event{Time: slow(), Kind: "tick"})
	b := <-got
	for what, at := range map[string]time.Time{"batch": b.Created, "event": b.Events[0].Time} {
		if d := time.Since(at); d.Abs() > time.Minute {
			t.Errorf("%s stamped %v from now, want corrected to about now", what, d.Round(time.Second))
		}
	}
}

// deliveredPast ships one event to front, with a real aggregator as the
// failover, and checks that once the shipper counts it acknowledged, the
// aggregator holds it: what front answers must not count as delivery.
func deliveredPast(t *testing.T, front string) {
	t.Helper()
	a := serve(t, aggregator.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Tokens: map[string]string{"node-a": token}})
	s, err := ship.New(ship.Config{Aggregator: front, Failover: []string{"https://" + a.Addr()}, TokenFile: writeToken(t),
		Spool: ship.Spool{Dir: t.TempDir()}, Interval: units.Duration(10 * time.Millisecond), Node: "node-a",
		InsecureSkipVerify: true, RetryMax: 50 * time.Millisecond}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	s.AddEvent(telemetry.Event{Time: time.Now(), Kind: "delivered"})
	eventually(t, "the batch to be acknowledged", func() bool { return s.Stats().BatchesAcked == 1 })
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Get("https://" + a.Addr() + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var events struct{ Events []telemetry.Event }
	if err := json.NewDecoder(resp.Body).Decode(&events); err != nil {
		t.Fatal(err)
	}
	if len(events.Events) != 1 || events.Events[0].Kind != "delivered" {
		t.Fatalf("the aggregator holds events %+v, want the one the shipper counts as acknowledged", events.Events)
	}
}
