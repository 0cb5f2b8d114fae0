package aggregator_test

import (
	"reflect"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/aggregator/vmtest"
	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// overflowBatches are two batches of node-a whose api service's breakers
// refused requests: 7 past max_requests and 1 past max_pending in all.
func overflowBatches(t *testing.T, now time.Time) [][]byte {
	var frames [][]byte
	for i, of := range []map[string]uint64{{"max_requests": 5}, {"max_requests": 2, "max_pending": 1}} {
		at := now.Add(time.Duration(i-2) * time.Second)
		s := sample("node-a", i+1)
		s.Time = at
		api := s.Services["api"]
		api.Overflow = of
		s.Services["api"] = api
		s.Services["img"] = telemetry.ServiceSample{RPS: 1}
		frames = append(frames, seal(t, &wire.Batch{Node: "node-a", Seq: uint64(i + 1), Created: at, Samples: []telemetry.NodeSample{s}}))
	}
	return frames
}

// The fleet answer shows a node's circuit overflows by service and reason,
// summed over the samples it holds, and the same after a restart, which
// rebuilds the view from the store.
func TestFleetShowsCircuitOverflowsAndKeepsThemOverARestart(t *testing.T) {
	a := startAggregator(t, nil)
	for _, f := range overflowBatches(t, time.Now()) {
		if status, msg := post(t, a, tokenA, f); status != 200 {
			t.Fatalf("post: %d %s", status, msg)
		}
	}
	want := []aggregator.Overflow{{Service: "api", Reason: "max_pending", Count: 1}, {Service: "api", Reason: "max_requests", Count: 7}}
	n, ok := fleetNode(t, a, "node-a")
	if !ok || !reflect.DeepEqual(n.CircuitOverflow, want) {
		t.Fatalf("circuit_overflow %+v, want %+v", n.CircuitOverflow, want)
	}
	a.stop()
	b := startAggregator(t, func(c *aggregator.Config) { c.DataDir = a.dataDir })
	eventually(t, "the restarted view", func() bool {
		n, ok := fleetNode(t, b, "node-a")
		return ok && reflect.DeepEqual(n.CircuitOverflow, want)
	})
	if n, _ := fleetNode(t, b, "node-b"); n.CircuitOverflow != nil {
		t.Fatalf("a node without overflows shows %+v", n.CircuitOverflow)
	}
}

// The dashboard's node table shows the refusals, each service and reason
// in the cell's title.
func TestDashboardShowsCircuitOverflows(t *testing.T) {
	a := startAggregator(t, nil)
	for _, f := range overflowBatches(t, time.Now()) {
		if status, msg := post(t, a, tokenA, f); status != 200 {
			t.Fatalf("post: %d %s", status, msg)
		}
	}
	page := openInChromium(t, a.url("/"))
	var cell struct{ Text, Title string }
	eventually(t, "node-a's refusals on the dashboard", func() bool {
		err := page.eval(t, `(() => {
			const tr = document.querySelector('#nodes tr[data-node="node-a"]');
			const i = [...document.querySelectorAll("thead th")].findIndex(th => th.textContent === "refused");
			return JSON.stringify({text: tr.cells[i].textContent, title: tr.cells[i].title});
		})()`, &cell)
		return err == nil && cell.Text == "8"
	})
	if cell.Title != "api max_pending: 1\napi max_requests: 7" {
		t.Fatalf("the cell's title: %q", cell.Title)
	}
}

// The export writes each window's overflows as a series labelled with
// service and reason into a real victoria-metrics.
func TestExportCarriesCircuitOverflows(t *testing.T) {
	vmAddr := vmtest.Start(t)
	a := startAggregator(t, func(c *aggregator.Config) { c.Export = &aggregator.Export{URL: "http://" + vmAddr + "/api/v1/write"} })
	for _, f := range overflowBatches(t, time.Now()) {
		if status, msg := post(t, a, tokenA, f); status != 200 {
			t.Fatalf("post: %d %s", status, msg)
		}
	}
	vmtest.Expect(t, vmAddr, map[string]string{
		`sum(sum_over_time(perigee_service_window_circuit_overflows{node="node-a",region="eu-west",service="api",reason="max_requests"}[1h]))`: "7",
		`sum(sum_over_time(perigee_service_window_circuit_overflows{node="node-a",service="api",reason="max_pending"}[1h]))`:                   "1",
	})
	// A service whose breakers refused nothing writes no overflow series.
	if got := vmtest.Query(vmAddr, `count(count_over_time(perigee_service_window_circuit_overflows{service="img"}[1h]))`); got != "no single result (<nil>)" {
		t.Errorf("img has overflow series: %s", got)
	}
}
