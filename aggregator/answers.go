package aggregator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"time"
)

// Answers of the JSON API and /metrics are made of what nodes sent, they
// take no token, and an answer is held until its client has read it (up
// to the write timeout): an HTTP/2 connection asking for the latest
// decisions on 200 streams and reading none held 200 answers of 3 MB, and
// 200 unread scrapes held 200 gzip compressors. So at most
// maxAnswersBuilding answers are built at once (that work is CPU, two
// cores gain nothing from more) or wait for the budget, and the answers
// being written hold at most maxAnswerBytes together, or one larger answer
// alone. Past either bound a request waits up to slotWait, then gets 503
// with Retry-After.
const (
	maxAnswersBuilding = 4
	maxAnswerBytes     = 64 << 20
)

// byteBudget is a count of bytes that answers being written take from and
// give back.
type byteBudget struct {
	mu    sync.Mutex
	size  int64
	free  int64
	freed chan struct{} // closed, and replaced, when bytes are given back
}

func newByteBudget(size int64) *byteBudget {
	return &byteBudget{size: size, free: size, freed: make(chan struct{})}
}

// take takes n bytes, or the whole budget if n is more, waiting up to
// slotWait for them; it returns what it took.
func (b *byteBudget) take(r *http.Request, n int64) (int64, bool) {
	n = min(n, b.size)
	t := time.NewTimer(slotWait)
	defer t.Stop()
	for {
		b.mu.Lock()
		if b.free >= n {
			b.free -= n
			b.mu.Unlock()
			return n, true
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-t.C:
			return 0, false
		case <-r.Context().Done():
			return 0, false
		}
	}
}

func (b *byteBudget) give(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.free += n
	close(b.freed)
	b.freed = make(chan struct{})
}

// answer builds an answer from the in-memory view within one of the
// building slots, then writes it within the byte budget.
func (s *server) answer(w http.ResponseWriter, r *http.Request, build func() (int, any)) {
	if !acquire(s.building, r) {
		busy(w, fmt.Sprintf("%d answers already being built; retry", maxAnswersBuilding))
		return
	}
	status, b := encodeJSON(build())
	s.send(w, r, s.building, jsonHeader(), status, b)
}

// answerFrom is h's answer made like the others: h writes it into memory
// within one of the building slots (a handler that compresses holds its
// compressor only meanwhile), then it is written within the byte budget.
func (s *server) answerFrom(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !acquire(s.building, r) {
			busy(w, fmt.Sprintf("%d answers already being built; retry", maxAnswersBuilding))
			return
		}
		rec := &recordedAnswer{header: http.Header{}, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		s.send(w, r, s.building, rec.header, rec.status, rec.body.Bytes())
	})
}

// recordedAnswer is a ResponseWriter that keeps the answer in memory.
type recordedAnswer struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (a *recordedAnswer) Header() http.Header { return a.header }

func (a *recordedAnswer) WriteHeader(status int) {
	if !a.wroteHeader {
		a.status, a.wroteHeader = status, true
	}
}

func (a *recordedAnswer) Write(p []byte) (int, error) {
	a.wroteHeader = true
	return a.body.Write(p)
}

// send writes an answer made within one of slots, its header and its
// bytes, within the byte budget. The slot is given back once the bytes are
// counted in the budget (or refused): an answer waiting for the budget
// holds its slot, so those waiting are bounded too.
func (s *server) send(w http.ResponseWriter, r *http.Request, slots chan struct{}, header http.Header, status int, b []byte) {
	n, ok := s.answerBytes.take(r, int64(len(b)))
	<-slots
	if !ok {
		busy(w, fmt.Sprintf("answers of %d MiB already being written; retry", maxAnswerBytes>>20))
		return
	}
	defer s.answerBytes.give(n)
	maps.Copy(w.Header(), header)
	w.WriteHeader(status)
	w.Write(b)
}

// busy answers 503: retry in a second.
func busy(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": msg})
}

// writeJSON answers v, or a 500 that says why it could not be written
// (rather than a 200 with an empty body). It is for answers of a few
// bytes, which take no budget: the rest go through send.
func writeJSON(w http.ResponseWriter, status int, v any) {
	status, b := encodeJSON(status, v)
	maps.Copy(w.Header(), jsonHeader())
	w.WriteHeader(status)
	w.Write(b)
}

func jsonHeader() http.Header {
	return http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}}
}

func encodeJSON(status int, v any) (int, []byte) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(map[string]string{"error": "encoding the answer: " + err.Error()})
	}
	return status, append(b, '\n')
}

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
}
