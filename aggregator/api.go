package aggregator

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// The JSON query API, all GET:
//
//	/v1/fleet                                         nodes, regions, health
//	/v1/series?scope=fleet|region|node&name=&window=&step=
//	/v1/decisions?node=&region=&limit=                newest first
//	/v1/events?node=&region=&limit=                   newest first
func (s *server) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/fleet", func(w http.ResponseWriter, r *http.Request) {
		s.answer(w, r, func() (int, any) {
			v := s.fleet.view(time.Now(), s.places, s.dedup)
			v.Warming = !s.warm.Load()
			return http.StatusOK, v
		})
	})
	mux.HandleFunc("GET /v1/series", s.handleSeries)
	mux.HandleFunc("GET /v1/decisions", func(w http.ResponseWriter, r *http.Request) {
		match, limit, err := filterAndLimit(r)
		if err != nil {
			writeError(w, err)
			return
		}
		s.answer(w, r, func() (int, any) {
			return http.StatusOK, s.withWarming(map[string]any{"decisions": s.fleet.recentDecisions(match, limit)})
		})
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		match, limit, err := filterAndLimit(r)
		if err != nil {
			writeError(w, err)
			return
		}
		s.answer(w, r, func() (int, any) {
			return http.StatusOK, s.withWarming(map[string]any{"events": s.fleet.recentEvents(match, limit)})
		})
	})
}

// maxStoreQueries bounds the series queries that read the rollups or the
// store at once: each may hold a store segment (up to 64 MiB) in memory,
// and the API takes no token.
const maxStoreQueries = 2

func (s *server) handleSeries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	scope, name := q.Get("scope"), q.Get("name")
	var match func(node, region string) bool
	switch scope {
	case "", "fleet":
		scope, match = "fleet", func(string, string) bool { return true }
	case "region":
		match = func(_, region string) bool { return region == name }
	case "node":
		match = func(node, _ string) bool { return node == name }
	default:
		writeError(w, fmt.Errorf("scope: want fleet, region or node, got %q", scope))
		return
	}
	if scope != "fleet" && name == "" {
		writeError(w, fmt.Errorf("name: required for scope %s", scope))
		return
	}
	window, err := durationParam(q.Get("window"), 15*time.Minute)
	if err != nil {
		writeError(w, fmt.Errorf("window: %w", err))
		return
	}
	if window > s.cfg.Retention {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": s.beyondRetention(window)})
		return
	}
	step, err := durationParam(q.Get("step"), window/60)
	if err != nil || step < time.Second || window/step > 10_000 {
		writeError(w, fmt.Errorf("step: want at least 1s and at most 10000 steps per window"))
		return
	}
	// A query past the memory window reads the rollups or the store and
	// may hold a segment; one within it is built from the view. Either
	// slot is given back before the answer is written (see send).
	slots, why := s.building, fmt.Sprintf("%d answers already being built; retry", maxAnswersBuilding)
	if window > s.cfg.MemoryWindow {
		slots, why = s.storeQueries, fmt.Sprintf("%d queries already read the store; retry", maxStoreQueries)
	}
	if !acquire(slots, r) {
		busy(w, why)
		return
	}
	status, b := s.series(r, scope, name, match, window, step)
	s.send(w, r, slots, jsonHeader(), status, b)
}

// series answers a series query, encoded.
func (s *server) series(r *http.Request, scope, name string, match func(node, region string) bool, window, step time.Duration) (int, []byte) {
	to := time.Now()
	from := to.Add(-window)
	// Which resolution answers: docs/telemetry.md, "Rollup tiers".
	var points []SeriesPoint
	var err error
	source := "memory"
	tier := tierFor(step)
	switch {
	case window <= s.cfg.MemoryWindow:
		points = s.fleet.series(match, from, to, step)
	case tier >= 0:
		// Every point covers whole steps, the first included.
		from = time.Unix(0, from.UnixNano()/int64(step)*int64(step))
		source = tiers[tier].name
		points, err = s.seriesFromTier(r.Context(), tier, match, from, to, step)
	default:
		source = "store"
		points, err = s.seriesFromStore(r.Context(), match, from, to, step)
	}
	if errors.Is(err, errTooManyCells) || errors.Is(err, errOverBudget) {
		return encodeJSON(http.StatusUnprocessableEntity, map[string]string{"error": err.Error()})
	}
	if err != nil {
		s.log.Error("series from the store", "err", err)
		return encodeJSON(http.StatusServiceUnavailable, map[string]string{"error": "reading the store failed"})
	}
	answer := map[string]any{"scope": scope, "name": name, "step_seconds": step.Seconds(), "source": source, "points": points}
	if source == "memory" {
		s.withWarming(answer)
	}
	return encodeJSON(http.StatusOK, answer)
}

// withWarming marks an answer from the in-memory view while that view is
// still being filled from the store after a start.
func (s *server) withWarming(answer map[string]any) map[string]any {
	if !s.warm.Load() {
		answer["warming"] = true
	}
	return answer
}

// beyondRetention says why a window longer than the retention cannot be
// answered here, and where its data is, if anywhere.
func (s *server) beyondRetention(window time.Duration) string {
	msg := fmt.Sprintf("window %v reaches past the retention %v: this aggregator's embedded store no longer holds that data", window, s.cfg.Retention)
	if ex := s.cfg.Export; ex != nil {
		return msg + fmt.Sprintf("; every exported sample is in the engine export writes to (%s): query it there with PromQL, e.g. sum(perigee_node_rps)", redactedURL(ex.URL))
	}
	return msg
}

func durationParam(v string, def time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("want a positive duration like 15m, got %q", v)
	}
	return d, nil
}

func filterAndLimit(r *http.Request) (func(node, region string) bool, int, error) {
	q := r.URL.Query()
	node, region := q.Get("node"), q.Get("region")
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxDecisions {
			return nil, 0, fmt.Errorf("limit: want 1..%d, got %q", maxDecisions, v)
		}
		limit = n
	}
	return func(n, rg string) bool {
		return (node == "" || n == node) && (region == "" || rg == region)
	}, limit, nil
}
