package ship_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/files/filestest"
	"perigee/logtest"
	"perigee/memtest"
	"perigee/telemetry"
	"perigee/telemetry/ship"
	"perigee/units"
)

// What is in the spool directory that the spool did not write is not
// followed: a batch name that is a FIFO held the shipper in os.ReadFile for
// good (and with it Stats, the next batch and the node's shutdown), one
// that is a symlink to /dev/zero read until memory ran out, and a
// temporary name planted as a symlink had the spool truncate and write the
// file it points to. Each such batch is dropped and counted now, a
// temporary name is made afresh, and the real batches go on.
func TestSpoolFollowsNothingItDidNotWrite(t *testing.T) {
	dataDir := t.TempDir()
	cfg := aggregator.Config{Listen: "127.0.0.1:0", DataDir: dataDir, Tokens: map[string]string{"node-a": token}}
	a := serve(t, cfg)

	spoolDir := t.TempDir()
	batch := func(seq string) string { return filepath.Join(spoolDir, seq+".batch") }
	if err := syscall.Mkfifo(batch("00000000000000000001"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", batch("00000000000000000002")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(batch("00000000000000000003"), 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := ship.New(ship.Config{Aggregator: "https://" + a.Addr(), TokenFile: writeToken(t), Spool: ship.Spool{Dir: spoolDir},
		Interval: units.Duration(10 * time.Millisecond), Node: "node-a", CAFile: filepath.Join(dataDir, aggregator.DevCertFile),
		RetryMax: 100 * time.Millisecond}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(spoolDir, "next.seq.tmp")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	s.AddEvent(telemetry.Event{Time: time.Now(), Kind: "real"})
	eventually(t, "the real batch to be acknowledged", func() bool { return s.Stats().BatchesAcked == 1 })
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the shipper did not stop")
	}
	if st := s.Stats(); st.DroppedBatches != 3 {
		t.Fatalf("dropped %d batches, want the 3 that are no files of the spool's", st.DroppedBatches)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me" {
		t.Fatalf("the file a planted temporary name points to holds %q, %v", b, err)
	}
}

// The spool's own files are read within what the spool writes: the
// sequence file (a number) and each batch (within the spool's bound) were
// read whole, so a sparse file of 256 MiB under either name took 256 MiB
// of heap. Each is refused now by its size, with a line naming it: the
// numbering goes on from the clock, as without the file, and the batch is
// dropped and counted; the real batch after it is delivered.
func TestTamperedSpoolFilesAreRefusedUnread(t *testing.T) {
	dataDir := t.TempDir()
	a := serve(t, aggregator.Config{Listen: "127.0.0.1:0", DataDir: dataDir, Tokens: map[string]string{"node-a": token}})
	spoolDir := t.TempDir()
	tampered := []string{"next.seq", "00000000000000000001.batch"}
	for _, name := range tampered {
		filestest.Sparse(t, filepath.Join(spoolDir, name), 256<<20)
	}
	var log logtest.Buffer
	var s *ship.Shipper
	grew := memtest.PeakGrowthDuring(func() {
		var err error
		s, err = ship.New(ship.Config{Aggregator: "https://" + a.Addr(), TokenFile: writeToken(t), Spool: ship.Spool{Dir: spoolDir, Max: 16 << 20},
			Interval: units.Duration(10 * time.Millisecond), Node: "node-a", CAFile: filepath.Join(dataDir, aggregator.DevCertFile),
			RetryMax: 100 * time.Millisecond}, slog.New(slog.NewTextHandler(&log, nil)))
		if err != nil {
			t.Fatal(err)
		}
		run(t, s)
		s.AddEvent(telemetry.Event{Time: time.Now(), Kind: "real"})
		eventually(t, "the real batch to be acknowledged", func() bool { return s.Stats().BatchesAcked == 1 })
	})
	t.Logf("the heap peaked %.1f MiB higher", float64(grew)/(1<<20))
	if st := s.Stats(); st.DroppedBatches != 1 {
		t.Fatalf("dropped %d batches, want the tampered one", st.DroppedBatches)
	}
	for _, name := range tampered {
		if !strings.Contains(log.String(), filepath.Join(spoolDir, name)+": over") {
			t.Errorf("no line says %s is refused for its size:\n%s", name, log.String())
		}
	}
	if grew > 64<<20 {
		t.Fatalf("the heap grew %d MiB reading files of 256 MiB", grew>>20)
	}
}
