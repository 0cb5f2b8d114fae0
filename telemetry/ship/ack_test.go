package ship_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// A shipper deletes a batch once it is acknowledged, and took any 200 for
// that: something else answering in the aggregator's place (a proxy's
// fixed answer, a web server the name now points to) had every batch
// deleted as delivered, none of them stored anywhere. Only the
// aggregator's own acknowledgement, {"status":"stored"} or "duplicate",
// deletes a batch now; any other 200 keeps it, and the next aggregator
// gets it. So with a refusal: a proxy's own 413 (its body limit) or 400
// dropped every batch as one the aggregator would never take; only a
// refusal that carries the aggregator's clock is its own.
func TestOnlyTheAggregatorsAcknowledgementDeletesABatch(t *testing.T) {
	for _, answer := range []struct {
		name   string
		status int
		body   string
	}{
		{"200 from another server", http.StatusOK, "OK"},
		{"a proxy's 413", http.StatusRequestEntityTooLarge, "<html><body>413 Request Entity Too Large</body></html>"},
		{"a proxy's 400", http.StatusBadRequest, "<html><body>400 Bad Request</body></html>"},
	} {
		t.Run(answer.name, func(t *testing.T) {
			impostor := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(answer.status)
				fmt.Fprintln(w, answer.body)
			}))
			t.Cleanup(impostor.Close)
			deliveredPast(t, impostor.URL)

		})
	}
}
