package logsink

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"perigee/memtest"
)

func jsonHandler(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) }

// within fails the test if f does not return in a generous bound: a
// Write or Close that waits for a stalled reader would hang here.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s blocked on a reader that stopped reading", what)
	}
}

// A pipe nobody reads fills at 64 KiB; logging goes on without waiting,
// within the buffer's memory, and when the reader comes back it gets whole
// lines in order, with one line counting the ones dropped in their place.
func TestStalledReaderNeitherBlocksNorGrows(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	const size = 256 << 10
	s := New(w, size, Notice(jsonHandler))
	defer s.Close(context.Background())
	log := slog.New(jsonHandler(s))
	pad := strings.Repeat("x", 200)
	seq := 0
	logN := func(n int) {
		for range n {
			log.Info("line", "seq", seq, "pad", pad)
			seq++
		}
	}
	within(t, "logging", func() { logN(5000) })
	before := memtest.LiveHeap()
	within(t, "logging", func() { logN(50000) })
	grew := memtest.LiveHeap() - before
	t.Logf("heap in use grew by %d KiB over 50000 lines to a stalled pipe (buffer %d KiB); %d dropped", grew>>10, size>>10, s.Dropped())
	if grew > 4*size {
		t.Fatalf("heap grew by %d bytes", grew)
	}
	if s.Dropped() == 0 {
		t.Fatal("nothing dropped into a stalled pipe")
	}

	// The reader is back: what was buffered, then the notice, then the
	// lines logged since, which go on until one follows the notice.
	got := make(chan map[string]any, 1024)
	go func() {
		defer close(got)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("a broken line: %q: %v", sc.Text(), err)
				return
			}
			got <- m
		}
	}()
	var lines []map[string]any
	deadline := time.After(20 * time.Second)
	for noticed, after := false, false; !after; {
		select {
		case m := <-got:
			lines = append(lines, m)
			after = noticed
			_, noticed = m["dropped"]
			noticed = noticed || after
		case <-time.After(5 * time.Millisecond):
			logN(1)
		case <-deadline:
			t.Fatalf("no line after the dropped count in %d lines read", len(lines))
		}
	}
	var next float64
	var counted float64
	var notices int
	for _, m := range lines {
		if d, ok := m["dropped"].(float64); ok {
			notices++
			counted += d
			next += d
			continue
		}
		if m["seq"] != next {
			t.Fatalf("line %v where seq %v was due", m["seq"], next)
		}
		next++
	}
	if notices != 1 || counted > float64(s.Dropped()) {
		t.Fatalf("%d notices counting %v dropped, want 1 counting %d", notices, counted, s.Dropped())
	}
}

// Close flushes what is buffered, and gives up at its deadline on a dead
// pipe instead of waiting for it.
func TestCloseIsBoundedOnADeadPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	s := New(w, 1<<20, Notice(jsonHandler))
	log := slog.New(jsonHandler(s))
	for range 2000 {
		log.Info("line", "pad", strings.Repeat("y", 100))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var cerr error
	within(t, "Close", func() { cerr = s.Close(ctx) })
	if !errors.Is(cerr, context.DeadlineExceeded) || !strings.Contains(cerr.Error(), "bytes not written") {
		t.Fatalf("Close on a dead pipe: %v", cerr)
	}
}

// On a live writer, Close leaves nothing behind.
func TestCloseFlushes(t *testing.T) {
	var b lineBuffer
	s := New(&b, 1<<20, Notice(jsonHandler))
	log := slog.New(jsonHandler(s))
	for range 1000 {
		log.Info("line")
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 1000 {
		t.Fatalf("%d lines written, want 1000", n)
	}
}
