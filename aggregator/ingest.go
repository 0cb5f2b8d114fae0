package aggregator

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"perigee/telemetry/wire"
)

// Ingest results, the label of perigee_aggregator_batches_total.
const (
	resStored       = "stored"
	resDuplicate    = "duplicate"
	resUnauthorized = "unauthorized"
	resForbidden    = "node_mismatch"
	resMalformed    = "malformed"
	resCorrupt      = "corrupt"
	resUnknownDict  = "unknown_dict"
	resTooLarge     = "too_large"
	resClockSkew    = "clock_skew"
	resTooOld       = "too_old"
	resBusy         = "in_flight"
	resOverloaded   = "overloaded"
	resStoreError   = "store_error"
)

// anyNode is the token owner that may send as any node (development).
const anyNode = "*"

// authenticate maps the bearer token to its node. Tokens are looked up by
// their hash so the lookup time says nothing about a guess.
func (s *server) authenticate(r *http.Request) (string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return "", false
	}
	node, ok := s.tokens[sha256.Sum256([]byte(tok))]
	return node, ok
}

// handleIngest accepts one batch. Every refusal has its own status and
// counter; only a batch that is durably stored (or was already) gets 200,
// which is what the shipper waits for before forgetting it.
func (s *server) handleIngest(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST a batch", http.StatusMethodNotAllowed)
		return
	}
	res, status, msg := s.ingest(r)
	s.metrics.batches.WithLabelValues(res).Inc()
	if status != http.StatusOK {
		s.log.Warn("batch refused", "result", res, "status", status, "reason", msg, "remote", r.RemoteAddr)
		http.Error(w, res+": "+msg, status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, "{\"status\":%q}\n", res)
}

func (s *server) ingest(r *http.Request) (result string, status int, msg string) {
	owner, ok := s.authenticate(r)
	if !ok {
		return resUnauthorized, http.StatusUnauthorized, "missing or unknown bearer token"
	}
	// Each ingest in flight may hold its body, the decompressed payload and
	// the decoded records: slots bound how many do at once.
	if !s.acquireSlot(r) {
		return resOverloaded, http.StatusTooManyRequests, fmt.Sprintf("%d batches already being read; retry", cap(s.slots))
	}
	defer func() { <-s.slots }()
	// The compressed body can be a little larger than what it inflates
	// to, never by much.
	limit := s.opener.Limit() + 64<<10
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return resTooLarge, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", limit)
	}
	if err != nil {
		return resMalformed, http.StatusBadRequest, "reading body: " + err.Error()
	}
	s.metrics.bytesIn.Add(float64(len(body)))
	f, err := wire.ParseFrame(body, s.opener.Limit())
	if res, status, ok := frameError(err); !ok {
		return res, status, err.Error()
	}
	if owner != anyNode && owner != f.Node {
		return resForbidden, http.StatusForbidden, fmt.Sprintf("token belongs to %q, batch claims %q", owner, f.Node)
	}
	now := time.Now()
	if res, msg := s.checkTime(f.Created, now); res != "" {
		return res, http.StatusUnprocessableEntity, "batch " + msg
	}
	switch s.fleet.reserve(f.Node, f.Seq) {
	case duplicate:
		return resDuplicate, http.StatusOK, ""
	case inFlight:
		return resBusy, http.StatusConflict, "this batch is being stored by another request; retry"
	}
	stored := false
	defer func() {
		if !stored {
			s.fleet.release(f.Node, f.Seq)
		}
	}()
	b, err := s.opener.Open(f)
	if res, status, ok := frameError(err); !ok {
		return res, status, err.Error()
	}
	if res, msg := s.checkRecordTimes(b, now); res != "" {
		return res, http.StatusUnprocessableEntity, msg
	}
	if err := s.store.Append(now, body); err != nil {
		s.log.Error("store append failed", "node", f.Node, "seq", f.Seq, "err", err)
		return resStoreError, http.StatusServiceUnavailable, "could not store the batch"
	}
	stored = true
	s.fleet.apply(b, now)
	s.metrics.records.Add(float64(b.Records()))
	s.metrics.rawBytes.Add(float64(f.RawLen))
	return resStored, http.StatusOK, ""
}

// slotWait is how long a batch waits for an ingest slot before it is
// told to come back later.
const slotWait = time.Second

func (s *server) acquireSlot(r *http.Request) bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(slotWait)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return true
	case <-t.C:
	case <-r.Context().Done():
	}
	return false
}

// frameError maps a wire error to a result and status.
func frameError(err error) (string, int, bool) {
	switch {
	case err == nil:
		return "", 0, true
	case errors.Is(err, wire.ErrTooLarge):
		return resTooLarge, http.StatusRequestEntityTooLarge, false
	case errors.Is(err, wire.ErrChecksum):
		return resCorrupt, http.StatusBadRequest, false
	case errors.Is(err, wire.ErrUnknownDict):
		return resUnknownDict, http.StatusUnsupportedMediaType, false
	default:
		return resMalformed, http.StatusBadRequest, false
	}
}

// checkTime refuses a time from too far in the future (a skewed clock would
// put the data in the wrong place) or older than retention (it would be
// pruned, and its id forgotten, at once).
func (s *server) checkTime(t, now time.Time) (result, msg string) {
	switch {
	case t.After(now.Add(s.cfg.MaxSkew)):
		return resClockSkew, fmt.Sprintf("time %s is %v ahead of the aggregator (max %v)", t.UTC().Format(time.RFC3339), t.Sub(now).Round(time.Second), s.cfg.MaxSkew)
	case t.Before(now.Add(-s.cfg.Retention)):
		return resTooOld, fmt.Sprintf("time %s is older than retention %v", t.UTC().Format(time.RFC3339), s.cfg.Retention)
	}
	return "", ""
}

func (s *server) checkRecordTimes(b *wire.Batch, now time.Time) (result, msg string) {
	times := make([]time.Time, 0, len(b.Samples)+len(b.Decisions)+len(b.Events))
	for _, v := range b.Samples {
		times = append(times, v.Time)
	}
	for _, v := range b.Decisions {
		times = append(times, v.Time)
	}
	for _, v := range b.Events {
		times = append(times, v.Time)
	}
	for _, t := range times {
		if res, msg := s.checkTime(t, now); res != "" {
			return res, "record " + msg
		}
	}
	return "", ""
}
