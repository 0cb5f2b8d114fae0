package aggregator

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"perigee/logtest"
)

// The refusal line let through after some were held back says how many,
// under the key every rate-limited line of the node uses: dropped_before.
func TestRefusalLineCarriesDroppedBefore(t *testing.T) {
	s := memoryServer(t, time.Minute)
	var log logtest.Buffer
	s.log = slog.New(slog.NewTextHandler(&log, nil))
	// A window that ended just now, whose one line went out and whose
	// next two refusals were held back.
	past := time.Now().Add(-refusalLogEvery)
	for range 3 {
		s.refusals.due(resUnauthorized, past)
	}
	w := httptest.NewRecorder()
	s.handleIngest(w, httptest.NewRequest(http.MethodPost, "/ingest", strings.NewReader("batch")))
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("a batch without a token: %d, want 401", w.Code)
	}
	if out := log.String(); !strings.Contains(out, `msg="batch refused"`) || !strings.Contains(out, "dropped_before=2") {
		t.Errorf("the refusal line %q, want it to carry dropped_before=2", out)
	}
}
