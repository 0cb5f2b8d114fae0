package ship_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/telemetry"
	"perigee/telemetry/ship"
	"perigee/units"
)

// A shipper deletes a batch once it is acknowledged, and took any 200 for
// that: something else answering in the aggregator's place (a proxy's
// fixed answer, a web server the name now points to) had every batch
// deleted as delivered, none of them stored anywhere. Only the
// aggregator's own acknowledgement, {"status":"stored"} or "duplicate",
// deletes a batch now; any other 200 keeps it, and the next aggregator
// gets it.
func TestOnlyTheAggregatorsAcknowledgementDeletesABatch(t *testing.T) {
	impostor := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "OK")
	}))
	t.Cleanup(impostor.Close)
	a := serve(t, aggregator.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Tokens: map[string]string{"node-a": token}})

	s, err := ship.New(ship.Config{Aggregator: impostor.URL, Failover: []string{"https://" + a.Addr()}, TokenFile: writeToken(t),
		Spool: ship.Spool{Dir: t.TempDir()}, Interval: units.Duration(10 * time.Millisecond), Node: "node-a",
		InsecureSkipVerify: true, RetryMax: 50 * time.Millisecond}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	s.AddEvent(telemetry.Event{Time: time.Now(), Kind: "delivered"})
	eventually(t, "the batch to be acknowledged", func() bool { return s.Stats().BatchesAcked == 1 })

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Get("https://" + a.Addr() + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var events struct{ Events []telemetry.Event }
	if err := json.NewDecoder(resp.Body).Decode(&events); err != nil {
		t.Fatal(err)
	}
	if len(events.Events) != 1 || events.Events[0].Kind != "delivered" {
		t.Fatalf("the aggregator holds events %+v, want the one the shipper counts as acknowledged", events.Events)
	}
}
