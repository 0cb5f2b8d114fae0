package aggregator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Answers of the JSON API are made of what nodes sent, the API takes no
// token, and an answer is held until its client has read it (up to the
// write timeout): an HTTP/2 connection asking for the latest decisions on
// 200 streams and reading none held 200 answers of 3 MB. So at most
// maxAnswersBuilding answers are built from the in-memory view at once
// (that work is CPU, two cores gain nothing from more) or wait for the
// budget, and the answers being written hold at most maxAnswerBytes
// together, or one larger answer alone. Past either bound a request waits up to slotWait, then
// gets 503 with Retry-After.
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
	s.send(w, r, s.building, status, b)
}

// send writes an answer encoded within one of slots, within the byte
// budget. The slot is given back once the answer's bytes are counted in
// the budget (or refused): an answer waiting for the budget holds its
// slot, so those waiting are bounded too.
func (s *server) send(w http.ResponseWriter, r *http.Request, slots chan struct{}, status int, b []byte) {
	n, ok := s.answerBytes.take(r, int64(len(b)))
	<-slots
	if !ok {
		busy(w, fmt.Sprintf("answers of %d MiB already being written; retry", maxAnswerBytes>>20))
		return
	}
	defer s.answerBytes.give(n)
	writeEncoded(w, status, b)
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
	writeEncoded(w, status, b)
}

func encodeJSON(status int, v any) (int, []byte) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(map[string]string{"error": "encoding the answer: " + err.Error()})
	}
	return status, append(b, '\n')
}

func writeEncoded(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
}
