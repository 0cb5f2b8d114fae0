package aggregator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/servertest"
)

// TestRemoteWriteIntoRealPrometheus runs Debian's prometheus with its
// remote-write receiver and checks that the fleet figures arrive there.
func TestRemoteWriteIntoRealPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (Debian package prometheus); .ci/run installs it")
	}
	promAddr := startPrometheus(t, bin)
	a := startAggregator(t, func(c *aggregator.Config) {
		c.RemoteWrite = &aggregator.RemoteWrite{URL: "http://" + promAddr + "/api/v1/write", Interval: time.Second}
	})
	s := newShipper(t, a, "node-b", tokenB, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	s.AddSample(sample("node-b", 321))

	query := func(q string) (string, bool) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return "", false
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || len(r.Data.Result) == 0 {
			return "", false
		}
		return fmt.Sprint(r.Data.Result[0].Value[1]), true
	}
	eventually(t, "node-b's rps in prometheus", func() bool {
		v, ok := query(`perigee_node_rps{node="node-b",region="eu-west"}`)
		return ok && v == "321"
	})
	if v, ok := query(`perigee_region_rps{region="eu-west"}`); !ok || v != "321" {
		t.Fatalf("region rps in prometheus: %q", v)
	}
	if got := metricValue(a.metrics(t), `perigee_aggregator_remote_write_total{result="ok"}`); got == "" || got[0] == '<' {
		t.Fatalf("remote write counter: %s", got)
	}
}

// startPrometheus runs prometheus with its remote-write receiver and
// returns its address once it is ready.
func startPrometheus(t *testing.T, bin string) string {
	t.Helper()
	var tsdb string
	return servertest.Start(t, "prometheus", func(addr string) *exec.Cmd {
		dir := t.TempDir()
		cfg := writeFile(t, dir, "prometheus.yml", "global:\n  scrape_interval: 1m\n")
		tsdb = filepath.Join(dir, "tsdb")
		return exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+tsdb,
			"--web.listen-address="+addr, "--web.enable-remote-write-receiver")
	}, func(addr string) bool { // its flags say whose it is
		var flags struct{ Data map[string]string }
		resp, err := http.Get("http://" + addr + "/api/v1/status/flags")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&flags) == nil && flags.Data["storage.tsdb.path"] == tsdb
	})
}
