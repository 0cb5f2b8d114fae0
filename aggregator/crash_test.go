package aggregator_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/telemetry"
)

// childEnv makes the test binary run as a real aggregator process, so the
// crash test can kill it with SIGKILL: no deferred code, no graceful close.
const childEnv = "PERIGEE_TEST_AGGREGATOR_CONFIG"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(runChild(path))
	}
	os.Exit(m.Run())
}

func runChild(path string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := aggregator.LoadConfig(path)
	if err != nil {
		log.Error("config", "err", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := aggregator.Run(ctx, cfg, log); err != nil {
		log.Error("run", "err", err)
		return 1
	}
	return 0
}

func startChild(t *testing.T, config string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+config)
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// TestKillAggregatorMidStreamExactlyOnce kills the aggregator process with
// SIGKILL twice while a node streams, restarts it on the same address, and
// checks that every record the node produced was stored exactly once: the
// node spools while the aggregator is gone, resends what was not
// acknowledged, and the aggregator's store and dedup survive the crash.
func TestKillAggregatorMidStreamExactlyOnce(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	config := writeFile(t, dir, "agg.yaml", fmt.Sprintf("listen: %q\ndata_dir: data\ntokens:\n  node-a: %s\n", addr, tokenA))
	a := &agg{addr: addr, caFile: filepath.Join(dir, "data", aggregator.DevCertFile)}
	child := startChild(t, config)
	eventually(t, "the dev certificate", func() bool { _, err := os.Stat(a.caFile); return err == nil })
	a.client = httpsClient(t, a.caFile)

	s := newShipper(t, a, "node-a", tokenA, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()

	produced := 0
	produce := func(until func() bool) {
		for !until() {
			produced++
			s.AddDecision(telemetry.Decision{Time: time.Now(), Region: "eu-west", Action: "weight", Value: float64(produced)})
			time.Sleep(5 * time.Millisecond)
		}
	}
	for round := range 2 {
		acked := s.Stats().BatchesAcked
		produce(func() bool { return s.Stats().BatchesAcked >= acked+20 })
		if err := child.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = child.Wait()
		// The node keeps producing while the aggregator is gone: its
		// batches must wait in the spool.
		produce(func() bool { return s.Stats().SpooledBatches >= 5 })
		t.Logf("round %d: killed with %d produced, %d spooled", round, produced, s.Stats().SpooledBatches)
		child = startChild(t, config)
	}
	produce(func() bool { return s.Stats().BatchesAcked > 0 && produced > 500 })
	eventually(t, "the spool to drain", func() bool {
		st := s.Stats()
		return st.SpooledBatches == 0 && st.PendingRecords == 0
	})
	cancel()
	<-done
	st := s.Stats()
	if st.DroppedBatches != 0 || st.DroppedRecords != 0 || st.BatchesRefused != 0 {
		t.Fatalf("shipper lost data: %+v", st)
	}

	var d struct{ Decisions []telemetry.Decision }
	a.getJSON(t, fmt.Sprintf("/v1/decisions?node=node-a&limit=%d", 10000), &d)
	seen := make(map[int]int, produced)
	for _, dec := range d.Decisions {
		seen[int(dec.Value)]++
	}
	for i := 1; i <= produced; i++ {
		if seen[i] != 1 {
			t.Fatalf("decision %d of %d stored %d times", i, produced, seen[i])
		}
	}
	if produced >= 10000 {
		t.Fatalf("produced %d: over what /v1/decisions keeps in memory, the check would be blind", produced)
	}
	if len(d.Decisions) != produced {
		t.Fatalf("stored %d decisions, produced %d", len(d.Decisions), produced)
	}
	m := a.metrics(t)
	t.Logf("produced %d decisions in %d batches; after the last restart: stored=%s duplicate=%s", produced, st.BatchesAcked,
		metricValue(m, `perigee_aggregator_batches_total{result="stored"}`), metricValue(m, `perigee_aggregator_batches_total{result="duplicate"}`))
}
