package aggregator_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/logtest"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// The engines' URLs are the one place their credentials go (basic auth as
// user:password@, which the client sends), and the answer to a series
// past the retention named the export's URL whole, password and all, to
// whoever may query, as did each line logging a failed push. They name
// it without the password now.
func TestEngineURLPasswordsStayOutOfAnswersAndLogs(t *testing.T) {
	const password = "s3cret-engine-password"
	var log logtest.Buffer
	a := startAggregatorLogging(t, func(c *aggregator.Config) {
		c.Retention = 24 * time.Hour
		c.Export = &aggregator.Export{URL: "http://writer:" + password + "@127.0.0.1:1/api/v1/write"}
		c.RemoteWrite = &aggregator.RemoteWrite{URL: "http://writer:" + password + "@127.0.0.1:1/api/v1/write", Interval: time.Second}
	}, slog.New(slog.NewTextHandler(&log, nil)))
	b := &wire.Batch{Node: "node-a", Seq: 1, Created: time.Now(), Samples: []telemetry.NodeSample{sample("node-a", 1)}}
	if status, msg := post(t, a, tokenA, seal(t, b)); status != 200 {
		t.Fatalf("post: %d %s", status, msg)
	}
	status, body := a.get(t, "/v1/series?window=48h&step=1h")
	if status != 422 || !strings.Contains(string(body), "http://writer:xxxxx@127.0.0.1:1/api/v1/write") || strings.Contains(string(body), password) {
		t.Fatalf("past the retention: %d %s, want 422 naming the engine without its password", status, body)
	}
	eventually(t, "both pushes' failures logged", func() bool {
		return strings.Contains(log.String(), "export failed") && strings.Contains(log.String(), "remote write failed")
	})
	if strings.Contains(log.String(), password) {
		t.Fatalf("the log holds the engine's password:\n%s", grepLines(log.String(), password))
	}
}
