package aggregator

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"perigee/aggregator/store"
	"perigee/lograte"
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
	resTooOld       = "too_old"
	resBusy         = "in_flight"
	resOverloaded   = "overloaded"
	resSlowBody     = "body_timeout"
	resStoreError   = "store_error"
	resStoreFull    = "store_full"
	resOverShare    = "node_over_share"
)

// refusedResults are the results that refuse a batch: every one but
// stored and duplicate. Each is logged at its own rate (refusalLog).
var refusedResults = []string{resUnauthorized, resForbidden, resMalformed, resCorrupt, resUnknownDict,
	resTooLarge, resTooOld, resBusy, resOverloaded, resSlowBody, resStoreError, resStoreFull, resOverShare}

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
		stampTime(w)
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST a batch", http.StatusMethodNotAllowed)
		return
	}
	res, status, msg := s.ingest(w, r)
	s.metrics.batches.WithLabelValues(res).Inc()
	stampTime(w)
	if status != http.StatusOK {
		if ok, dropped := s.refusals.due(res, time.Now()); ok {
			s.log.Warn("batch refused", append([]any{"result", res, "status", status, "reason", msg, "remote", r.RemoteAddr,
				"next_line_within", refusalLogEvery}, dropped...)...)
		}
		http.Error(w, res+": "+msg, status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, "{\"status\":%q}\n", res)
}

// timeHeader is ship.TimeHeader: every answer to an ingest carries this
// aggregator's clock, from which a node corrects its own before it seals
// a batch (see restamp for what is left to the aggregator).
const timeHeader = "Perigee-Time"

func stampTime(w http.ResponseWriter) {
	w.Header().Set(timeHeader, strconv.FormatInt(time.Now().UnixMilli(), 10))
}

// BodyTimeout is how long a batch's body may take to arrive once it
// holds an ingest slot. A shipper gives up on a post after 15 s, so a
// slower body is of use to no one; and HTTP/3 has no server read timeout
// of its own, so without it a body that never ends held its slot for good.
const BodyTimeout = 15 * time.Second

// maxBody bounds a batch's body, and so a stored record: the compressed
// body can be a little larger than what it inflates to, never by much.
func (s *server) maxBody() int64 { return s.opener.Limit() + 64<<10 }

func (s *server) ingest(w http.ResponseWriter, r *http.Request) (result string, status int, msg string) {
	owner, ok := s.authenticate(r)
	if !ok {
		return resUnauthorized, http.StatusUnauthorized, "missing or unknown bearer token"
	}
	// A shipper sends one batch at a time, so one node needs one slot at
	// most: it cannot take the others' (the development token, which
	// sends as any node, aside).
	if owner != anyNode {
		if !s.claimReader(owner) {
			retryAfter(w, slotWait)
			return resOverloaded, http.StatusTooManyRequests, fmt.Sprintf("a batch of %q is already being read; one at a time", owner)
		}
		defer s.releaseReader(owner)
	}
	// Each ingest in flight may hold its body, the decompressed payload and
	// the decoded records: slots bound how many do at once.
	if !acquire(s.slots, r) {
		retryAfter(w, slotWait)
		return resOverloaded, http.StatusTooManyRequests, fmt.Sprintf("%d batches already being read; retry", cap(s.slots))
	}
	defer func() { <-s.slots }()
	limit := s.maxBody()
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(BodyTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return resTooLarge, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", limit)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return resSlowBody, http.StatusRequestTimeout, fmt.Sprintf("body not read within %v", BodyTimeout)
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
	if f.Created.Before(now.Add(-s.cfg.Retention)) {
		// It would be pruned at once, and its id forgotten with it.
		return resTooOld, http.StatusUnprocessableEntity, fmt.Sprintf("batch time %s is older than retention %v",
			f.Created.UTC().Format(time.RFC3339), s.cfg.Retention)
	}
	switch s.dedup.reserve(f.Node, f.Seq, s.store.End()) {
	case duplicate:
		return resDuplicate, http.StatusOK, ""
	case inFlight:
		retryAfter(w, slotWait)
		return resBusy, http.StatusConflict, "this batch is being stored by another request; retry"
	}
	stored := false
	defer func() {
		if !stored {
			s.dedup.release(f.Node, f.Seq)
		}
	}()
	// Checked before decoding, and charged only once stored: a refusal
	// costs the node nothing, a duplicate is answered whatever its budget.
	if ok, wait := s.budgets.allows(owner, now); !ok {
		retryAfter(w, wait)
		return resOverShare, http.StatusTooManyRequests, fmt.Sprintf("%q has stored its share of max_store_bytes for now; retry later", owner)
	}
	b, err := s.opener.Open(f)
	if res, status, ok := frameError(err); !ok {
		return res, status, err.Error()
	}
	err = s.keep(now, body, b)
	if errors.Is(err, store.ErrFull) {
		// 507, which the shipper keeps and resends: retention, not a
		// newer batch, frees the room (docs/telemetry.md, The store), at
		// the first prune after a segment leaves it.
		retryAfter(w, s.store.FreedAt(s.cfg.Retention).Sub(now)+s.pruneEvery())
		return resStoreFull, http.StatusInsufficientStorage, "the store holds max_store_bytes; retry later"
	}
	if err != nil {
		s.log.Error("store append failed", "node", f.Node, "seq", f.Seq, "err", err)
		return resStoreError, http.StatusServiceUnavailable, "could not store the batch"
	}
	stored = true
	s.budgets.charge(owner, len(body), now)
	s.metrics.records.Add(float64(b.Records()))
	s.metrics.rawBytes.Add(float64(f.RawLen))
	return resStored, http.StatusOK, ""
}

// keep stores the frame of batch b, which arrived at now, and once it is
// durable folds b into the dedup state, the rollups and the fleet view.
func (s *server) keep(now time.Time, frame []byte, b *wire.Batch) error {
	s.rollups.gate.RLock()
	seg, err := s.store.Append(now, frame)
	if err != nil {
		s.rollups.gate.RUnlock()
		return err
	}
	s.dedup.commit(b.Node, b.Seq, b.Records())
	skew := restamp(b, now, s.cfg.MaxSkew)
	s.rollups.add(seg, b)
	s.rollups.gate.RUnlock()
	if skew > s.cfg.MaxSkew {
		s.log.Warn("node clock ahead, batch re-stamped", "node", b.Node, "seq", b.Seq, "skew", skew.Round(time.Second))
	}
	s.fleet.apply(b, now, skew)
	return nil
}

// retryAfter tells a shipper refused for now when to come back, in whole
// seconds and at least one; a shipper caps it at its own longest backoff.
func retryAfter(w http.ResponseWriter, d time.Duration) {
	secs := max(1, int64((d+time.Second-1)/time.Second))
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
}

// refusalLogEvery is how often each kind of refusal may be logged: a node
// flooding, or anyone without a token, must not flood the log.
const refusalLogEvery = 10 * time.Second

// refusalLog rate-limits the refusal lines, one kind at a time: a kind's
// line, then its line's rate. The kinds are fixed when it is made, so the
// map is only read.
type refusalLog map[string]*lograte.Limit

func newRefusalLog(kinds []string) refusalLog {
	l := make(refusalLog, len(kinds))
	for _, k := range kinds {
		l[k] = lograte.New(1, refusalLogEvery)
	}
	return l
}

// due counts a refusal of a kind and reports whether to log it, with the
// attributes the line carries (lograte.Limit.Allow). A kind it was not
// made with is never logged: the lines it could flood are what it bounds.
func (l refusalLog) due(kind string, now time.Time) (ok bool, attrs []any) {
	lim := l[kind]
	if lim == nil {
		return false, nil
	}
	return lim.Allow(now)
}

func (s *server) claimReader(node string) bool {
	s.readingMu.Lock()
	defer s.readingMu.Unlock()
	if s.reading[node] {
		return false
	}
	s.reading[node] = true
	return true
}

func (s *server) releaseReader(node string) {
	s.readingMu.Lock()
	defer s.readingMu.Unlock()
	delete(s.reading, node)
}

// slotWait is how long a batch, or a query that reads the store, waits
// for a slot before it is told to come back later.
const slotWait = time.Second

// acquire takes one of slots for r, waiting up to slotWait.
func acquire(slots chan struct{}, r *http.Request) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(slotWait)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
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

// restamp keeps the telemetry of a node whose clock runs fast, the last
// resort behind the node's own correction (ship corrects by the offset it
// learns from timeHeader before it seals a batch, so this applies only to
// a batch sealed before the node heard from any aggregator): a batch
// stamped more than maxSkew after it arrived has every time in it moved back
// by the difference (the node's offset), and a record still ahead of the
// arrival by more than maxSkew is clamped to it, so nothing lands in the
// future. It returns the offset it measured, which the fleet view shows.
// Replay calls it with the stored arrival time, so a restart re-stamps the
// same way.
func restamp(b *wire.Batch, received time.Time, maxSkew time.Duration) time.Duration {
	skew := b.Created.Sub(received)
	var shift time.Duration
	if skew > maxSkew {
		shift = skew
	}
	limit := received.Add(maxSkew)
	fix := func(t *time.Time) {
		if t.IsZero() {
			return
		}
		*t = t.Add(-shift)
		if t.After(limit) {
			*t = received
		}
	}
	fix(&b.Created)
	b.RecordTimes(fix)
	return skew
}
