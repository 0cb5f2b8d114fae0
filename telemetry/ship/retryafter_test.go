package ship_test

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/telemetry"
	"perigee/telemetry/ship"
	"perigee/units"
)

// An aggregator that refuses a batch for now (429, 507) says when to come
// back, and the shipper waits that long before it resends, rather than
// its own backoff of a quarter second: in delta-seconds or as an
// HTTP-date against the answer's Date. A value past the shipper's longest
// backoff (a year, or garbage) cannot hold the spool longer than that
// backoff: the batch is still delivered, and nothing is dropped.
func TestShipperWaitsAsLongAsRetryAfterSaysWithinItsCap(t *testing.T) {
	inTwoSeconds := func(h http.Header) string {
		now := time.Now().UTC()
		h.Set("Date", now.Format(http.TimeFormat))
		return now.Add(2 * time.Second).Format(http.TimeFormat)
	}
	for _, c := range []struct {
		name     string
		retryMax time.Duration
		status   int
		after    func(h http.Header) string
		atLeast  time.Duration // between the refusal and the resend
	}{
		{"delta-seconds", 10 * time.Second, http.StatusTooManyRequests, func(http.Header) string { return "2" }, 2 * time.Second},
		{"HTTP-date", 10 * time.Second, http.StatusInsufficientStorage, inTwoSeconds, 2 * time.Second},
		{"a year, over the cap", 100 * time.Millisecond, http.StatusInsufficientStorage, func(http.Header) string { return "31536000" }, 0},
		{"a date in 9999, over the cap", 100 * time.Millisecond, http.StatusTooManyRequests,
			func(http.Header) string { return "Fri, 31 Dec 9999 23:59:59 GMT" }, 0},
		{"garbage", 100 * time.Millisecond, http.StatusTooManyRequests, func(http.Header) string { return "-1, soon" }, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			dataDir := t.TempDir()
			a := serve(t, aggregator.Config{Listen: "127.0.0.1:0", DataDir: dataDir, Tokens: map[string]string{"node-a": token}})
			target, _ := url.Parse("https://" + a.Addr())
			toAggregator := httputil.NewSingleHostReverseProxy(target)
			toAggregator.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
			// In front of the aggregator: its refusal, with its clock, for
			// the first attempt; the aggregator itself after.
			var mu sync.Mutex
			var attempts []time.Time
			front := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost {
					toAggregator.ServeHTTP(w, r)
					return
				}
				mu.Lock()
				attempts = append(attempts, time.Now())
				first := len(attempts) == 1
				mu.Unlock()
				if !first {
					toAggregator.ServeHTTP(w, r)
					return
				}
				w.Header().Set("Retry-After", c.after(w.Header()))
				w.Header().Set(ship.TimeHeader, strconv.FormatInt(time.Now().UnixMilli(), 10))
				http.Error(w, "refused for now", c.status)
			}))
			t.Cleanup(front.Close)
			s, err := ship.New(ship.Config{Aggregator: front.URL, TokenFile: writeToken(t), Spool: ship.Spool{Dir: t.TempDir()},
				Interval: units.Duration(10 * time.Millisecond), Node: "node-a", InsecureSkipVerify: true, RetryMax: c.retryMax},
				slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			run(t, s)
			s.AddEvent(telemetry.Event{Time: time.Now(), Kind: "delivered"})
			eventually(t, "the batch to be acknowledged", func() bool { return s.Stats().BatchesAcked == 1 })
			if st := s.Stats(); st.DroppedBatches != 0 || st.BatchesRefused != 0 {
				t.Fatalf("a batch refused for now was dropped: %+v", st)
			}
			mu.Lock()
			defer mu.Unlock()
			if gap := attempts[1].Sub(attempts[0]); gap < c.atLeast {
				t.Fatalf("resent %v after a Retry-After of %v", gap, c.atLeast)
			}
		})
	}
}
