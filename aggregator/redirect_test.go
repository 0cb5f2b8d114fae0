package aggregator_test

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// An engine (or whatever answers at its URL) that redirects a push: the
// client followed a 302 with a GET, which the page it led to answered 200,
// so the push counted as acknowledged, the export's cursor moved past the
// batch and nothing was written anywhere; a 307 would have posted the
// fleet's series to whatever host the Location named. A redirect is a
// failed push now, retried, and says where it pointed.
func TestPushesDoNotFollowRedirects(t *testing.T) {
	for _, c := range []struct {
		name   string
		config func(c *aggregator.Config, url string)
		result string
	}{
		{"export", func(c *aggregator.Config, url string) { c.Export = &aggregator.Export{URL: url} },
			"perigee_aggregator_export_total"},
		{"remote_write", func(c *aggregator.Config, url string) {
			c.RemoteWrite = &aggregator.RemoteWrite{URL: url, Interval: time.Second}
		}, "perigee_aggregator_remote_write_total"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var followed atomic.Int64
			mux := http.NewServeMux()
			mux.HandleFunc("POST /api/v1/write", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/elsewhere", http.StatusFound)
			})
			mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) { followed.Add(1) })
			engine := httptest.NewServer(mux)
			t.Cleanup(engine.Close)
			a := startAggregator(t, func(cfg *aggregator.Config) { c.config(cfg, engine.URL+"/api/v1/write") })
			b := &wire.Batch{Node: "node-a", Seq: 1, Created: time.Now(), Samples: []telemetry.NodeSample{sample("node-a", 1)}}
			if status, msg := post(t, a, tokenA, seal(t, b)); status != 200 {
				t.Fatalf("post: %d %s", status, msg)
			}
			var m string
			eventually(t, "a push counted", func() bool {
				m = a.metrics(t)
				return metricValue(m, c.result+`{result="ok"}`)[0] != '<' || metricValue(m, c.result+`{result="error"}`)[0] != '<'
			})
			if ok := metricValue(m, c.result+`{result="ok"}`); ok[0] != '<' || followed.Load() != 0 {
				t.Fatalf("a redirected push counted as ok (%s), the redirect followed %d times", ok, followed.Load())
			}
		})
	}
}
