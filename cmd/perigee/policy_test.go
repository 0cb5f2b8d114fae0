package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writePolicyFiles writes a policy and a steady trace of ticks seconds.
func writePolicyFiles(t *testing.T, script string, ticks int) (policy, trace string) {
	t.Helper()
	dir := t.TempDir()
	policy, trace = filepath.Join(dir, "p.lua"), filepath.Join(dir, "steady.csv")
	var b strings.Builder
	b.WriteString("t,service,rps\n")
	for i := range ticks {
		fmt.Fprintf(&b, "%d,api,100\n", i)
	}
	if err := os.WriteFile(policy, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(trace, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return policy, trace
}

// A policy whose every evaluation fails, or whose decisions are all
// rejected, fails the test run unless --allow-errors says otherwise.
func TestPolicyTestFailsOnEvaluationErrorsAndRejections(t *testing.T) {
	failing, trace := writePolicyFiles(t, "function evaluate(m)\n  error(\"broken\")\nend\n", 20)
	code, out := perigee(t, "policy", "test", failing, "--trace", trace)
	if code != 1 || !strings.Contains(out, "summary:") || !strings.Contains(out, "p.lua:2") {
		t.Fatalf("failing evaluations: exit %d: %s", code, out)
	}
	if code, out := perigee(t, "policy", "test", failing, "--trace", trace, "--allow-errors"); code != 0 {
		t.Fatalf("--allow-errors: exit %d: %s", code, out)
	}
	rejected, trace := writePolicyFiles(t, `function evaluate(m) shed("nowhere", 2) end`, 20)
	if code, out := perigee(t, "policy", "test", rejected, "--trace", trace); code != 1 || !strings.Contains(out, "rejected") {
		t.Fatalf("rejected decisions: exit %d: %s", code, out)
	}
}

// An endless loop is stopped by its deadline a few times in a row, then
// the run ends with the first error and its line instead of replaying the
// whole trace.
func TestPolicyTestStopsAfterConsecutiveLimitHits(t *testing.T) {
	loop, trace := writePolicyFiles(t, "function evaluate(m)\n  while true do end\nend\n", 600)
	code, out := perigee(t, "policy", "test", loop, "--trace", trace)
	if code != 1 || !strings.Contains(out, "consecutive") || !strings.Contains(out, "p.lua:2") {
		t.Fatalf("endless loop: exit %d: %s", code, out)
	}
	if n := strings.Count(out, "deadline exceeded"); n > 4 {
		t.Fatalf("%d deadline errors before stopping: %s", n, out)
	}
}
