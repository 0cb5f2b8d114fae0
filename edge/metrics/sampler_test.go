package metrics

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"perigee/edge/upstream"
	"perigee/telemetry"
)

func TestSamplerCutsWindows(t *testing.T) {
	svc, err := upstream.NewService("api", upstream.Config{Backends: []upstream.BackendConfig{{URL: "http://127.0.0.1:1", Weight: 1}}},
		nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	m := New(func() []*upstream.Service { return []*upstream.Service{svc} })
	s := m.NewSampler("n1", "r1", func() []*upstream.Service { return []*upstream.Service{svc} })
	st := m.Service("api")
	t0 := time.Now()

	for i := range 10 {
		m.Begin(st)
		status := 200
		if i < 2 {
			status = 503
		}
		m.Done(st, "route", "api", "HTTP/1.1", status, 10*time.Millisecond)
	}
	m.Begin(st) // one still in the node, not at any backend: queued
	got := s.Sample(t0.Add(2 * time.Second))
	api := got.Services["api"]
	if api.Latency.Count() != 10 || api.ErrorRate != 0.2 || api.InFlight != 1 || api.Queued != 1 || got.InFlight != 1 {
		t.Fatalf("first window: %+v (node in flight %d)", api, got.InFlight)
	}
	if want := (telemetry.StatusClasses{0, 8, 0, 0, 2}); api.Status != want || got.Status != want {
		t.Fatalf("first window by class: service %v, node %v, want %v", api.Status, got.Status, want)
	}
	if api.RPS <= 0 || api.HealthyBackends != 1 || api.Backends != 1 {
		t.Fatalf("first window rates and backends: %+v", api)
	}

	// The next window holds only what happened since.
	m.Done(st, "route", "api", "HTTP/1.1", 200, 30*time.Millisecond)
	next := s.Sample(t0.Add(3 * time.Second)).Services["api"]
	if next.Latency.Count() != 1 || next.ErrorRate != 0 || next.InFlight != 0 || next.Queued != 0 {
		t.Fatalf("second window: %+v", next)
	}
	if next.Status != (telemetry.StatusClasses{0, 1, 0, 0, 0}) {
		t.Fatalf("second window by class: %v", next.Status)
	}
	if next.RPS != 1 {
		t.Fatalf("1 request in a 1 s window gave %v rps", next.RPS)
	}
	if s.Latest().Time != t0.Add(3*time.Second) {
		t.Fatal("Latest is not the last window")
	}
}
