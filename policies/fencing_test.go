package policies

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"perigee/policies/actuator"
	"perigee/units"
)

// write is what the webhook receiver saw: who wrote under which term.
type write struct {
	term uint64
	node string
}

// Two engines, one webhook: the leader is paused in the middle of a write
// (its first attempt failed and it waits to retry), the other node takes
// the lead under a new term and writes, then the first resumes and leads
// again under a newer term. The receiver must see terms that never go
// back, and never two nodes under one term.
func TestWebhookSeesIncreasingTermsAcrossALeaderPause(t *testing.T) {
	var mu sync.Mutex
	var writes []write
	failFirst := true
	firstFailed := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b actuator.WebhookBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if failFirst {
			failFirst = false
			close(firstFailed)
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		writes = append(writes, write{b.Term, b.Reason})
	}))
	defer srv.Close()

	engine := func(node string, src *fixedSource) *Engine {
		hook, err := actuator.NewWebhook("api", actuator.WebhookSpec{URL: srv.URL, Secret: "s", Backoff: 200 * time.Millisecond}, nil)
		if err != nil {
			t.Fatal(err)
		}
		src.set("api", ServiceFigures{RPS: 100})
		e, err := NewEngine(EngineConfig{
			Node: node, Region: "eu",
			Policies: []Spec{{Name: "p", Script: "p.lua", Interval: units.Duration(time.Second), Source: `
function evaluate(m) scale("api", state.n or 3, m.node.name) end`}},
			Bounds:    map[string]ServiceBounds{"api": {Min: 1, Max: 10}},
			Source:    src,
			Actuators: map[string]actuator.Actuator{"api": hook},
			SyncScale: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	srcA, srcB := &fixedSource{term: 1}, &fixedSource{follower: true}
	a, b := engine("a", srcA), engine("b", srcB)
	lead := func(s *fixedSource, term uint64, ok bool) {
		s.mu.Lock()
		s.term, s.follower = term, !ok
		s.mu.Unlock()
	}
	ctx := context.Background()

	aDone := make(chan error, 1)
	go func() { aDone <- a.Evaluate(ctx, "p") }()
	<-firstFailed // a is between its attempts: paused
	lead(srcA, 1, false)
	lead(srcB, 2, true)
	if err := b.Evaluate(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	// a resumes and takes the lead back, under a new term.
	lead(srcB, 2, false)
	lead(srcA, 3, true)
	if err := a.Reload(Spec{Name: "p", Script: "p.lua", Interval: units.Duration(time.Second), Source: `
function evaluate(m) scale("api", 4, m.node.name) end`}); err != nil {
		t.Fatal(err)
	}
	if err := a.Evaluate(ctx, "p"); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	owner := map[uint64]string{}
	var last uint64
	for i, w := range writes {
		if w.term < last {
			t.Errorf("write %d under term %d after term %d: %v", i, w.term, last, writes)
		}
		if o, ok := owner[w.term]; ok && o != w.node {
			t.Errorf("term %d written by %s and %s: %v", w.term, o, w.node, writes)
		}
		owner[w.term], last = w.node, max(last, w.term)
	}
	if len(writes) != 2 || writes[0] != (write{2, "b"}) || writes[1] != (write{3, "a"}) {
		t.Errorf("writes = %v, want b under 2 then a under 3", writes)
	}
	var deposed bool
	for _, d := range a.Decisions(10) {
		deposed = deposed || (d.Rejected != "" && d.Service == "api")
	}
	if !deposed {
		t.Errorf("a's write under the lost term is not logged as rejected: %+v", a.Decisions(10))
	}
}

// gatedActuator blocks each Scale until the test lets it through.
type gatedActuator struct {
	countingActuator
	entered chan int
	release chan struct{}
}

func (g *gatedActuator) Scale(ctx context.Context, r actuator.Request) error {
	g.entered <- r.Replicas
	<-g.release
	return g.countingActuator.Scale(ctx, r)
}

// The scale worker asks for leadership again right before each call: a
// request queued under a term that has ended by then never reaches the
// actuator, and is logged as not applied.
func TestQueuedScaleUnderAnEndedTermIsDropped(t *testing.T) {
	src := &fixedSource{term: 1}
	src.set("api", ServiceFigures{RPS: 1})
	act := &gatedActuator{countingActuator: countingActuator{n: 2}, entered: make(chan int, 4), release: make(chan struct{})}
	e, err := NewEngine(EngineConfig{
		Policies: []Spec{{Name: "p", Script: "p.lua", Interval: units.Duration(time.Hour), Source: `
function evaluate(m) state.n = (state.n or 2) + 1; scale("api", state.n) end`}},
		Bounds:    map[string]ServiceBounds{"api": {Min: 1, Max: 10, Behavior: unstable}},
		Source:    src,
		Actuators: map[string]actuator.Actuator{"api": act},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	defer func() { close(act.release); cancel(); <-done }() // a failing test must not leave the worker blocked

	if err := e.Evaluate(ctx, "p"); err != nil { // asks 3 under term 1
		t.Fatal(err)
	}
	if n := <-act.entered; n != 3 {
		t.Fatalf("first call for %d", n)
	}
	if err := e.Evaluate(ctx, "p"); err != nil { // asks 4 under term 1, queued
		t.Fatal(err)
	}
	src.mu.Lock()
	src.term = 2 // still leading, under a new term
	src.mu.Unlock()
	act.release <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var dropped bool
		for _, d := range e.Decisions(10) {
			dropped = dropped || (d.Value == 4 && strings.Contains(d.Rejected, "no longer held"))
		}
		if dropped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the queued call was not dropped: %+v", e.Decisions(10))
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case n := <-act.entered:
		t.Fatalf("the actuator was called for %d under an ended term", n)
	default:
	}
	if h := act.history(); len(h) != 1 || h[0] != 3 {
		t.Fatalf("actuator history %v, want [3]", h)
	}
}
