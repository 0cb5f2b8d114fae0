package policies

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"perigee/files/filestest"
	"perigee/memtest"
	"perigee/runtime/lua"
)

// Actions are held in Go memory, outside the script's heap budget, until
// the evaluation ends: a script that calls scale in a loop for its whole
// deadline must be stopped at a bounded count, with its line, not grow the
// node's heap by what it can call in that time.
func TestActionsPerEvaluationAreBounded(t *testing.T) {
	r := newRig(t, `
function evaluate(m)
  for i = 1, 3000000 do
    scale("api", 2, "again")
  end
end`, unhurried)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	err := r.eval(t)
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "p.lua:4") || !strings.Contains(err.Error(), "actions") {
		t.Fatalf("3M actions in one evaluation: err = %v, want the action limit with the line", err)
	}
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 64<<20 {
		t.Errorf("heap grew %d MiB during the evaluation", grew>>20)
	}
	if got := r.act.Replicas(); got != 2 {
		t.Errorf("replicas = %d after a refused evaluation, want 2 (nothing applied)", got)
	}
}

// countLog counts the records a logger gets.
type countLog struct{ n atomic.Int64 }

func (c *countLog) Enabled(context.Context, slog.Level) bool  { return true }
func (c *countLog) Handle(context.Context, slog.Record) error { c.n.Add(1); return nil }
func (c *countLog) WithAttrs([]slog.Attr) slog.Handler        { return c }
func (c *countLog) WithGroup(string) slog.Handler             { return c }

// A script's log() and print() are bounded per evaluation: a loop of them
// leaves a bounded number of records and one that says how many went.
func TestScriptLogsPerEvaluationAreBounded(t *testing.T) {
	logs := &countLog{}
	r := newRig(t, `
function evaluate(m)
  for i = 1, 100000 do
    log("tick", i)
    print("tock", i)
  end
end`, func(c *EngineConfig) {
		c.ScriptLog = slog.New(logs)
		unhurried(c)
	})
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	if n := logs.n.Load(); n > maxScriptLogs+1 || n == 0 {
		t.Fatalf("%d records from 200,000 log and print calls; want at most %d", n, maxScriptLogs+1)
	}
}

// The node's log takes a bounded number of decision lines a second, and
// says how many it left out; the decision log keeps every decision. A
// policy making its 1024 rejected calls each evaluation, 20 evaluations a
// second, wrote 20k warnings a second.
func TestDecisionLinesAreBounded(t *testing.T) {
	logs := &countLog{}
	r := newRig(t, `
function evaluate(m)
  for i = 1, 1000 do weight("web", "b" .. i, 10) end
end`, func(c *EngineConfig) {
		c.Log = slog.New(logs)
		c.Policies[0].Services = []string{"api"}
		unhurried(c)
	})
	for range 5 {
		if err := r.eval(t); err != nil {
			t.Fatal(err)
		}
	}
	if n := logs.n.Load(); n > 2*decisionLinesPerSecond+1 {
		t.Fatalf("%d log records from 5000 rejected decisions; want at most %d", n, 2*decisionLinesPerSecond+1)
	}
	if got := r.e.Decisions(1000); len(got) != 1000 || !strings.Contains(got[0].Rejected, "not assigned") {
		t.Fatalf("the decision log kept %d decisions, want its 1000", len(got))
	}
}

// The strings of an action (its service, target and reason) are copied into
// Go memory and kept in the decision log, outside the script's heap
// budget: scripts that pass long strings to their calls must be refused at
// the line, not leave the log holding a copy per call, evaluation after
// evaluation, far past the budget of any one of them.
func TestActionStringsAreBounded(t *testing.T) {
	r := newRig(t, `
function evaluate(m)
  local long = string.rep("x", 64 * 1024)
  for i = 1, 200 do
    scale("api", 2, long)
  end
end`, unhurried)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var err error
	for range 6 {
		err = r.eval(t)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew %d MiB", grew>>20)
	if grew > 16<<20 {
		t.Errorf("heap held %d MiB more after 6 evaluations", grew>>20)
	}
	if err == nil || !strings.Contains(err.Error(), "p.lua:5") || !strings.Contains(err.Error(), "reason") {
		t.Fatalf("a 64 KiB reason: err = %v, want the reason's limit with the line", err)
	}
	for _, call := range []string{`scale(string.rep("s", 100000), 2)`, `eject("api", string.rep("b", 100000), 5)`, `circuit(string.rep("c", 1000), {max_requests = 5})`} {
		r := newRig(t, "function evaluate(m)\n  "+call+"\nend", nil)
		if err := r.eval(t); err == nil || !strings.Contains(err.Error(), "p.lua:2") {
			t.Errorf("%s: err = %v, want a refusal with the line", call[:12], err)
		}
	}
}

// byteLog adds up the message bytes a logger gets.
type byteLog struct{ n atomic.Int64 }

func (c *byteLog) Enabled(context.Context, slog.Level) bool { return true }
func (c *byteLog) Handle(_ context.Context, r slog.Record) error {
	c.n.Add(int64(len(r.Message)))
	r.Attrs(func(a slog.Attr) bool { c.n.Add(int64(len(a.Value.String()))); return true })
	return nil
}
func (c *byteLog) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *byteLog) WithGroup(string) slog.Handler      { return c }

// What a script writes to the node's log is bounded in size as well as in
// count: 100 log records of 128 KiB each, an evaluation every 50 ms, would
// write 250 MB a second.
func TestScriptLogsAreBoundedInSize(t *testing.T) {
	logs := &byteLog{}
	r := newRig(t, `
function evaluate(m)
  local big = string.rep("y", 128 * 1024)
  for i = 1, 100 do
    log("tick", big)
  end
end`, func(c *EngineConfig) {
		c.ScriptLog = slog.New(logs)
		unhurried(c)
	})
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	if n := logs.n.Load(); n > 1<<20 {
		t.Errorf("100 log calls of 128 KiB wrote %d KiB to the log", n>>10)
	}
}

// A policy path that names a FIFO blocked the load (and so a reload) in
// open(2) for good; it is refused as what it is.
func TestPolicyPathThatIsNoFileIsRefused(t *testing.T) {
	fifo := filestest.FIFO(t, filepath.Join(t.TempDir(), "p.lua"))
	filestest.Refused(t, "loading a policy from a FIFO", func() error {
		_, err := NewEngine(EngineConfig{Source: &fixedSource{}, Policies: []Spec{{Name: "p", Script: fifo}}})
		return err
	}, "not a regular file")
}

// The tables of m outlive an evaluation, so what a script keeps in them
// counts toward its budget, and the engine makes them anew when the VM is
// over it: otherwise a script could keep data there, out of the VM's
// reach, evaluation after evaluation. The script hides its table from m's
// root, too, which the engine links again before the next evaluation.
func TestDataKeptInMIsBounded(t *testing.T) {
	const budget = 16 << 20
	r := newRig(t, `
function evaluate(m)
  local node = m.node
  node.junk = node.junk or {}
  for i = 1, 4 do node.junk[#node.junk + 1] = string.rep("x", 2^20 - 16) .. #node.junk end
  assert(node.name == "n1")
  m.node = nil
end`, func(c *EngineConfig) {
		c.AllocBytes = budget
		unhurried(c) // under load, copying 4 MiB took the default 100 ms
	})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stops := 0
	for range 40 {
		if err := r.eval(t); errors.Is(err, lua.ErrAllocation) {
			stops++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(r)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d of 40 evaluations stopped; heap grew %d MiB", stops, grew>>20)
	if stops == 0 || grew > 2*budget {
		t.Errorf("40 evaluations keeping 4 MiB each in m under a budget of %d MiB: %d stopped, heap grew %d MiB", budget>>20, stops, grew>>20)
	}
}

// A reason goes where control bytes break things: an exec actuator's
// environment (a NUL fails every run of the command), a log line, a
// webhook's JSON. A reason holding one is refused at its line.
func TestReasonsAreText(t *testing.T) {
	for _, reason := range []string{`"a\0b"`, `"line\nbreak"`, `"esc\27[31m"`, `"del\127"`} {
		// Every action takes a reason, circuit's in its third argument.
		for _, call := range []string{`scale("api", 2, `, `weight("api", "b", 10, `, `shed("r", 0.5, `, `circuit("api", {max_requests = 10}, `} {
			r := newRig(t, "function evaluate(m)\n  "+call+reason+")\nend", nil)
			if err := r.eval(t); err == nil || !strings.Contains(err.Error(), "p.lua:2") || !strings.Contains(err.Error(), "reason") {
				t.Errorf("%s%s): err = %v, want a refusal of the reason with the line", call, reason, err)
			}
		}
	}
	r := newRig(t, "function evaluate(m)\n  scale(\"api\", 2, \"p99 at 310 ms — over the 250 ms goal\")\nend", nil)
	if err := r.eval(t); err != nil {
		t.Errorf("a reason of plain text: %v", err)
	}
}

// A policy remembers what it last decided for each thing it named, to skip
// repeats, and a rejected decision is remembered too. The names are the
// script's: one that makes up a thousand backends an evaluation, each
// rejected, must not grow the node's heap evaluation after evaluation.
func TestMemosOfMadeUpNamesAreBounded(t *testing.T) {
	r := newRig(t, `
n = 0
function evaluate(m)
  for i = 1, 1000 do n = n + 1 weight("api", string.rep("b", 240) .. n, 20000) end
end`, func(c *EngineConfig) {
		c.LogSize = 10
		unhurried(c)
	})
	forget := func() { // what the test's target heard is not the engine's
		r.tgt.mu.Lock()
		r.tgt.decided = nil
		r.tgt.mu.Unlock()
	}
	base := memtest.LiveHeap()
	for range 40 {
		if err := r.eval(t); err != nil {
			t.Fatal(err)
		}
		forget()
	}
	grew := memtest.LiveHeap() - base
	p := r.e.policies["p"]
	p.mu.Lock()
	memos := len(p.last)
	p.mu.Unlock()
	t.Logf("40 000 made-up backends: %d memos, heap %+d KiB", memos, grew>>10)
	if memos > maxMemos+maxActions {
		t.Errorf("%d memos kept, over %d", memos, maxMemos+maxActions)
	}
	if grew > 4<<20 {
		t.Errorf("the heap grew by %d MiB for decisions about backends that do not exist", grew>>20)
	}
}

// What an actuator or target says of a failure is kept in the decision
// log, 1000 decisions long, and shipped: a long one is cut, as the
// kubernetes and webhook actuators already cut a server's answer.
func TestFailureTextsAreBounded(t *testing.T) {
	r := newRig(t, `function evaluate(m) scale("api", 3) shed("r", 0.5) end`, nil)
	r.act.fail = errors.New(strings.Repeat("q", 1<<20))
	r.tgt.fail = errors.New(strings.Repeat("t", 1<<20))
	if err := r.eval(t); err != nil {
		t.Fatal(err)
	}
	ds := r.e.Decisions(10)
	if len(ds) != 2 {
		t.Fatalf("%d decisions, want 2", len(ds))
	}
	for _, d := range ds {
		if len(d.Rejected) > maxRejected || !strings.HasSuffix(d.Rejected, " bytes more)") {
			t.Errorf("%s: a %d-byte rejection kept", d.Action, len(d.Rejected))
		}
	}
}
