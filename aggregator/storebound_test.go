package aggregator_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io/fs"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/logtest"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

const tokenDev = "token-of-the-dev-fleet-0123456789"

// bulkyBatch is a batch of node with seq whose frame holds about 1 KiB
// of incompressible text an event: what a flooding node posts.
func bulkyBatch(t *testing.T, node string, seq uint64, events int) []byte {
	t.Helper()
	var ev []telemetry.Event
	for range events {
		blob := make([]byte, 768)
		rand.Read(blob)
		ev = append(ev, telemetry.Event{Time: time.Now(), Node: node, Kind: "flood",
			Fields: map[string]string{"blob": base64.StdEncoding.EncodeToString(blob)}})
	}
	return seal(t, &wire.Batch{Node: node, Seq: seq, Created: time.Now(), Events: ev})
}

// storeBytes is the sum of the sizes of the files under the store's
// directory.
func storeBytes(t *testing.T, a *agg) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(a.dataDir, "store"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		n += info.Size()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A store at max_store_bytes refuses further batches with 507, which a
// shipper keeps and resends, rather than filling the disk: the files under
// data_dir/store stay within the bound however much is posted, the
// refusals are counted, and a node's shipper drops nothing. The
// development token, to which no per-node bound applies, does the flooding.
func TestStoreStaysWithinMaxStoreBytes(t *testing.T) {
	const bound = 1 << 20
	a := startAggregator(t, func(c *aggregator.Config) {
		c.MaxStoreBytes, c.MaxDecompressed = bound, 256<<10
		c.Tokens["*"] = tokenDev
	})
	before := storeBytes(t, a)
	// Until a batch of 32 events, then of 4, then of none is refused, so
	// that what room is left is less than any batch with a record.
	refused, seq := 0, uint64(0)
	for _, events := range []int{32, 4, 0} {
		for n := 0; ; n++ {
			seq++
			status, msg := post(t, a, tokenDev, bulkyBatch(t, "node-a", seq, events))
			if status == 507 {
				refused++
				break
			}
			if status != 200 || n > 2*bound/(1<<10) {
				t.Fatalf("batch %d of %d events: %d %s; the store holds %d bytes (bound %d)", seq, events, status, msg, storeBytes(t, a), bound)
			}
		}
	}
	after := storeBytes(t, a)
	t.Logf("store files: %d bytes before, %d after, bound %d", before, after, bound)
	if after > bound {
		t.Fatalf("the store holds %d bytes (bound %d)", after, bound)
	}
	if got := metricValue(a.metrics(t), `perigee_aggregator_batches_total{result="store_full"}`); got != "3" {
		t.Fatalf("store_full refusals counted: %s, want 3", got)
	}

	sh := newShipper(t, a, "node-b", tokenB, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sh.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	sh.AddSample(sample("node-b", 1))
	eventually(t, "node-b's batch refused as the store is full", func() bool {
		return metricValue(a.metrics(t), `perigee_aggregator_batches_total{result="store_full"}`) != "3"
	})
	st := sh.Stats()
	if st.BatchesRefused != 0 || st.DroppedBatches != 0 || st.SpooledBatches == 0 {
		t.Fatalf("the shipper of a node refused for a full store: %+v", st)
	}
	if got := storeBytes(t, a); got > bound {
		t.Fatalf("the store holds %d bytes (bound %d)", got, bound)
	}
	cancel()
	<-done
	a.stop()
	// A restart counts what the store holds.
	b := startAggregator(t, func(c *aggregator.Config) {
		c.MaxStoreBytes, c.MaxDecompressed, c.DataDir = bound, 256<<10, a.dataDir
		c.Tokens["*"] = tokenDev
	})
	if status, msg := post(t, b, tokenDev, bulkyBatch(t, "node-a", seq+1, 0)); status != 507 {
		t.Fatalf("a batch after a restart with the store full: %d %s", status, msg)
	}
}

// A node that floods is refused with 429 once it has stored its share
// for now, while the other node's batches are still stored and answered.
// With two named nodes each has half of max_store_bytes per retention, a
// quarter of that at once (docs/telemetry.md): node-a stores an eighth of
// the bound, and one batch more, before it is refused.
func TestFloodingNodeIsRefusedWhileOthersAreStored(t *testing.T) {
	const bound = 4 << 20
	a := startAggregator(t, func(c *aggregator.Config) {
		c.MaxStoreBytes, c.MaxDecompressed = bound, 256<<10
		c.Retention = time.Hour
	})
	refusedAt := uint64(0)
	for seq := uint64(1); seq <= bound/(48<<10) && refusedAt == 0; seq++ {
		switch status, msg := post(t, a, tokenA, bulkyBatch(t, "node-a", seq, 48)); status {
		case 200:
		case 429:
			refusedAt = seq
		default:
			t.Fatalf("batch %d: %d %s", seq, status, msg)
		}
	}
	flooded := storeBytes(t, a)
	t.Logf("node-a refused at batch %d, the store holds %d bytes (bound %d)", refusedAt, flooded, bound)
	if refusedAt == 0 || flooded > bound/8+64<<10 {
		t.Fatalf("node-a posted as much as the whole bound: refused at batch %d, the store holds %d bytes", refusedAt, flooded)
	}
	if got := metricValue(a.metrics(t), `perigee_aggregator_batches_total{result="node_over_share"}`); got != "1" {
		t.Fatalf("node_over_share refusals counted: %s", got)
	}
	for seq := uint64(1); seq <= 4; seq++ {
		if status, msg := post(t, a, tokenB, bulkyBatch(t, "node-b", seq, 48)); status != 200 {
			t.Fatalf("node-b's batch %d while node-a floods: %d %s", seq, status, msg)
		}
	}
	if status, _ := post(t, a, tokenA, bulkyBatch(t, "node-a", refusedAt+1, 48)); status != 429 {
		t.Fatalf("node-a again: %d, want 429", status)
	}
	var ev struct{ Events []telemetry.Event }
	a.getJSON(t, "/v1/events?node=node-b&limit=1000", &ev)
	if len(ev.Events) != 4*48 {
		t.Fatalf("node-b's events answered: %d, want %d", len(ev.Events), 4*48)
	}
}

// The development token sends as any node, so no per-node bound holds for
// it: starting with it says so, once.
func TestDevelopmentTokenIsWarnedAboutOnce(t *testing.T) {
	var log logtest.Buffer
	a := startAggregatorLogging(t, func(c *aggregator.Config) { c.Tokens["*"] = tokenDev }, slog.New(slog.NewTextHandler(&log, nil)))
	post(t, a, tokenDev, bulkyBatch(t, "node-a", 1, 0))
	a.stop()
	if n := strings.Count(log.String(), "development token"); n != 1 {
		t.Fatalf("%d warnings about the development token in:\n%s", n, log.String())
	}
}

// Refusals are logged at most once per refusalLogEvery (10 s) for each
// result, with the count of those left out: a flood of requests without a
// token was a log line each.
func TestRefusalsAreLoggedAtARate(t *testing.T) {
	var log logtest.Buffer
	a := startAggregatorLogging(t, nil, slog.New(slog.NewTextHandler(&log, nil)))
	start := time.Now()
	const posts = 50
	for range posts {
		if status, _ := post(t, a, "no-such-token-0123456789", bulkyBatch(t, "node-a", 1, 0)); status != 401 {
			t.Fatalf("unknown token: %d", status)
		}
	}
	allowed := 1 + int(time.Since(start)/(10*time.Second))
	a.stop()
	lines := strings.Count(log.String(), `msg="batch refused"`)
	if lines < 1 || lines > allowed {
		t.Fatalf("%d posts refused in %v logged %d lines, want 1 to %d:\n%s", posts, time.Since(start), lines, allowed, log.String())
	}
}

// A batch refused for now says when to come back (Retry-After, in
// seconds), which the shipper honours within its own longest backoff: a
// node over its share when its bucket will hold a batch again, a full
// store when retention can first free room (its oldest segment's newest
// record leaves the retention, and the next prune runs). Neither had one.
func TestRefusalsForNowSayWhenToRetry(t *testing.T) {
	retryAfter := func(t *testing.T, h http.Header) time.Duration {
		t.Helper()
		n, err := strconv.Atoi(h.Get("Retry-After"))
		if err != nil || n < 1 {
			t.Fatalf("Retry-After %q, want whole seconds, at least 1", h.Get("Retry-After"))
		}
		return time.Duration(n) * time.Second
	}
	t.Run("node over its share", func(t *testing.T) {
		const bound = 4 << 20
		a := startAggregator(t, func(c *aggregator.Config) {
			c.MaxStoreBytes, c.MaxDecompressed, c.Retention = bound, 256<<10, time.Hour
		})
		for seq := uint64(1); ; seq++ {
			status, h, msg := postAnswer(t, a, tokenA, bulkyBatch(t, "node-a", seq, 48))
			if status == 200 && seq < bound/(48<<10) {
				continue
			}
			if status != 429 {
				t.Fatalf("batch %d: %d %s, want 429 before the node posts the bound", seq, status, msg)
			}
			// The bucket refills its share less a quarter (3 MiB / 2
			// nodes × 3/4) per hour; one batch (~64 KiB) in debt at most.
			rate := float64(bound) / 2 * 3 / 4 / time.Hour.Seconds()
			if got, most := retryAfter(t, h), time.Duration((64<<10)/rate*float64(time.Second))+time.Second; got > most {
				t.Fatalf("Retry-After %v, over the %v a batch of debt takes to refill", got, most)
			}
			return
		}
	})
	t.Run("full store", func(t *testing.T) {
		const bound = 1 << 20
		a := startAggregator(t, func(c *aggregator.Config) {
			c.MaxStoreBytes, c.MaxDecompressed, c.Retention = bound, 256<<10, time.Hour
			c.Tokens["*"] = tokenDev
		})
		for seq := uint64(1); ; seq++ {
			status, h, msg := postAnswer(t, a, tokenDev, bulkyBatch(t, "node-a", seq, 32))
			if status == 200 && seq < 2*bound/(32<<10) {
				continue
			}
			if status != 507 {
				t.Fatalf("batch %d: %d %s, want 507 before the store holds twice its bound", seq, status, msg)
			}
			// Every batch is minutes old at most: the room comes back
			// with the retention (an hour) and the next prune (a minute).
			if got := retryAfter(t, h); got < time.Hour-10*time.Minute || got > time.Hour+time.Minute+time.Second {
				t.Fatalf("Retry-After %v, want the retention of an hour and a prune period at most", got)
			}
			return
		}
	})
}
