package aggregator_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// A series query longer than the memory window whose step is a whole
// number of minutes (or of ten minutes) is answered from the rollup tier
// of that resolution, with the same figures the raw samples give: each
// node's samples averaged per step, nodes summed. After a restart the
// sealed segment's rollups are written from the store, and answer alike.
func TestLongQueriesAnswerFromRollupTiers(t *testing.T) {
	dir := t.TempDir()
	a := startAggregator(t, func(c *aggregator.Config) { c.DataDir = dir; c.MemoryWindow = time.Minute })
	now := time.Now()
	base := now.Add(-50 * time.Minute).Truncate(10 * time.Minute)
	type smp struct {
		node string
		t    time.Time
		rps  float64
	}
	var sent []smp
	for i := range 80 { // 40 minutes, a sample every 30 s from each node
		for j, node := range []string{"node-a", "node-b"} {
			s := sample(node, i)
			s.Time, s.RPS = base.Add(time.Duration(i)*30*time.Second), float64(i+100*j)
			frame := seal(t, &wire.Batch{Node: node, Seq: uint64(i + 1), Created: now, Samples: []telemetry.NodeSample{s}})
			if status, msg := post(t, a, map[string]string{"node-a": tokenA, "node-b": tokenB}[node], frame); status != 200 {
				t.Fatalf("post: %d %s", status, msg)
			}
			sent = append(sent, smp{node, s.Time, s.RPS})
		}
	}
	// What the raw samples give, step by step.
	want := func(step time.Duration, from time.Time) string {
		type key struct {
			node string
			k    int64
		}
		sum, n := map[key]float64{}, map[key]int{}
		for _, s := range sent {
			if s.t.Before(from) {
				continue
			}
			k := key{s.node, s.t.UnixNano() / int64(step)}
			sum[k] += s.rps
			n[k]++
		}
		total := map[int64]float64{}
		for k, v := range sum {
			total[k.k] += v / float64(n[k])
		}
		out := ""
		for k := base.UnixNano() / int64(step); k <= now.UnixNano()/int64(step); k++ {
			if v, ok := total[k]; ok {
				out += fmt.Sprintf("%s=%g ", time.Unix(0, k*int64(step)).UTC().Format("15:04"), v)
			}
		}
		return out
	}
	check := func(when, window string, step time.Duration, source string) {
		t.Helper()
		var got struct {
			Source string
			Points []aggregator.SeriesPoint
		}
		a.getJSON(t, fmt.Sprintf("/v1/series?window=%s&step=%v", window, step), &got)
		d, _ := time.ParseDuration(window)
		from := time.Now().Add(-d)
		from = time.Unix(0, from.UnixNano()/int64(step)*int64(step)) // a tier answers whole steps
		out := ""
		for _, p := range got.Points {
			out += fmt.Sprintf("%s=%g ", p.T.UTC().Format("15:04"), p.RPS)
		}
		if got.Source != source || out != want(step, from) {
			t.Fatalf("%s: %s series at step %v from %q:\n got %s\nwant %s", when, window, step, got.Source, out, want(step, from))
		}
	}
	check("live", "1h", time.Minute, "1m")
	check("live", "2h", 10*time.Minute, "10m")
	check("live", "2h", 20*time.Minute, "10m")
	a.stop()
	a = startAggregator(t, func(c *aggregator.Config) { c.DataDir = dir; c.MemoryWindow = time.Minute })
	eventually(t, "the sealed segment's rollups to be written", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "rollup", "seg-*.10m"))
		return len(m) > 0
	})
	check("after a restart", "1h", time.Minute, "1m")
	check("after a restart", "2h", 10*time.Minute, "10m")
}
