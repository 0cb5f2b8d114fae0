package wasm

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// countingHandler keeps how many records came and the longest text.
type countingHandler struct {
	mu      sync.Mutex
	records int
	longest int
	dropped int64
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records++
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "text":
			h.longest = max(h.longest, len(a.Value.String()))
		case "dropped_before":
			h.dropped += a.Value.Int64()
		}
		return true
	})
	return nil
}

// A guest's log lines are hostile input like its memory and time: one that
// writes 6,000 records of 64 KiB through http-wasm's log, stdout and stderr
// in one call leaves a bounded number of records, each cut to a bounded
// size, and the node's log says how many were dropped.
func TestGuestLogFloodIsBounded(t *testing.T) {
	guest := wat(t, "hostile/logflood.wat")
	logs := &countingHandler{}
	h := newTestHost(t)
	h.logger = slog.New(logs)
	tr := loadT(t, h, Spec{Name: "logflood", Wasm: guest, Settings: Settings{Pool: 1}})
	srv := httptest.NewServer(NewChain(tr).Then(echoBackend))
	defer srv.Close()
	for range 2 {
		resp, err := http.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if logs.records > 2*guestLogBurst+10 {
		t.Errorf("%d log records from 12,000 guest writes; want at most about %d", logs.records, 2*guestLogBurst)
	}
	if logs.longest > maxGuestLogText+64 {
		t.Errorf("a guest record of %d bytes reached the log; want it cut near %d", logs.longest, maxGuestLogText)
	}
	if logs.records == 0 {
		t.Error("no guest record reached the log at all")
	}
}
