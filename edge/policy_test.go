package edge

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A policy scales a process-actuated service with the load the node sees:
// real children start, register as backends and serve, and go away after.
func TestPolicyScalesRealBackendsUpAndDown(t *testing.T) {
	n, svc := burstNode(t, "500ms")
	waitFor(t, "back to 1 after the load", func() bool { return svc() == 1 })

	var decisions []struct {
		Action, Reason string
		Applied        bool
		Value          float64
	}
	resp, err := http.Get("http://" + n.Addrs().Admin + "/decisions?n=50")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&decisions)
	resp.Body.Close()
	ups := 0
	for _, d := range decisions {
		if d.Action == "scale" && d.Value == 3 && d.Applied {
			ups++
		}
	}
	if ups == 0 {
		t.Fatalf("no applied scale-up in the decision log: %+v", decisions)
	}
}

// A policy's limit and shed decisions take effect on the route at once.
func TestPolicyLimitsAndShedsARoute(t *testing.T) {
	script := filepath.Join(t.TempDir(), "guard.lua")
	os.WriteFile(script, []byte(`
function evaluate(m)
  limit("api", 1, 1, "tight")
  shed("other", 1, "all of it")
end
`), 0o600)
	b := backend(t, "b")
	yaml := listenAny + fmt.Sprintf(`services:
  api: {backends: [{url: %q}]}
policies:
  guard: {script: %q, interval: 50ms}
routes:
  - {name: api, match: {path_prefix: /api}, service: api}
  - {name: other, match: {path_prefix: /other}, service: api}
`, b, script)
	n := startNode(t, yaml)
	c := h2Client()
	waitFor(t, "shedding on /other", func() bool {
		resp, _ := get(t, c, "https://"+n.Addrs().HTTPS+"/other")
		return resp.StatusCode == 503 && resp.Header.Get("Retry-After") != ""
	})
	if resp, _ := get(t, c, "https://"+n.Addrs().HTTPS+"/other", "X-Perigee-Priority", "high"); resp.StatusCode != 503 {
		t.Fatalf("a client claiming priority escaped shedding: %d", resp.StatusCode)
	}
	limited := 0
	for range 10 {
		if resp, _ := get(t, c, "https://"+n.Addrs().HTTPS+"/api"); resp.StatusCode == 429 {
			limited++
		}
	}
	if limited < 5 {
		t.Fatalf("1 rps limit let %d of 10 quick requests through", 10-limited)
	}
}

// A policy assigned a service sheds that service's routes and no other:
// shed and limit name a route, and went through for every route of the
// node.
func TestPolicyActsOnlyOnItsServicesRoutes(t *testing.T) {
	script := filepath.Join(t.TempDir(), "guard.lua")
	os.WriteFile(script, []byte(`
function evaluate(m)
  shed("to-web", 1, "not mine")
  shed("to-api", 1, "mine")
end
`), 0o600)
	n := startNode(t, listenAny+fmt.Sprintf(`services:
  api: {backends: [{url: %q}]}
  web: {backends: [{url: %q}]}
policies:
  guard: {script: %q, interval: 50ms, services: [api]}
routes:
  - {name: to-api, match: {path_prefix: /api}, service: api}
  - {name: to-web, match: {path_prefix: /web}, service: web}
`, backend(t, "a"), backend(t, "w"), script))
	c := h2Client()
	waitFor(t, "shedding on /api", func() bool {
		resp, _ := get(t, c, "https://"+n.Addrs().HTTPS+"/api")
		return resp.StatusCode == 503
	})
	if resp, _ := get(t, c, "https://"+n.Addrs().HTTPS+"/web"); resp.StatusCode != 200 {
		t.Fatalf("a policy assigned api shed web's route: %d", resp.StatusCode)
	}
}

// A script that does not compile is refused with the config's line and the
// script's; on reload the old script keeps running.
func TestBadPolicyScriptIsRefused(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.lua"), filepath.Join(dir, "bad.lua")
	os.WriteFile(good, []byte("function evaluate(m) end\n"), 0o600)
	os.WriteFile(bad, []byte("function evaluate(m)\n  if then\nend\n"), 0o600)
	conf := func(script string) string {
		return nodeYAML("round_robin", backend(t, "a")) + fmt.Sprintf("policies:\n  p: {script: %q}\n", script)
	}
	path := filepath.Join(dir, "node.yaml")
	writeFile(t, path, conf(bad))
	if n, err := newFromFile(path); err == nil {
		n.Shutdown(t.Context())
		t.Fatal("a script with a syntax error was accepted")
	} else if !strings.Contains(err.Error(), "node.yaml:") || !strings.Contains(err.Error(), "bad.lua:2") {
		t.Fatalf("error %q should name the config line and bad.lua:2", err)
	}
	n := startNode(t, conf(good))
	n.rewrite(conf(bad))
	if err := n.Reload(); err == nil || !strings.Contains(err.Error(), "bad.lua") {
		t.Fatalf("reload with a bad script: %v", err)
	}
	resp, err := http.Get("http://" + n.Addrs().Admin + "/policies")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ps []map[string]any
	json.NewDecoder(resp.Body).Decode(&ps)
	if len(ps) != 1 || !strings.HasSuffix(ps[0]["script"].(string), "good.lua") {
		t.Fatalf("the old script should still run: %+v", ps)
	}
	// Durations read as the config writes them, or in seconds named so.
	if _, ok := ps[0]["interval"].(string); !ok || ps[0]["last_duration_seconds"] == nil || len(unconventionalKeys(ps[0])) > 0 {
		t.Fatalf("GET /policies: %v", ps[0])
	}
}

// A reload just after a burst keeps the service's scale-down window: the
// policy asks for 1 as soon as the load stops, and the engine holds 3
// until the window from the service's behavior has passed, reload or not.
func TestReloadAfterABurstKeepsTheScaleDownWindow(t *testing.T) {
	n, svc := burstNode(t, "1h")
	if err := n.Reload(); err != nil {
		t.Fatal(err)
	}
	// The policy says "quiet" every 50 ms from here on (a held scale-down
	// restates what is in force, so it is not logged): give it a few dozen
	// evaluations to act on it.
	runs := func() uint64 { return n.scaling.engine.Policies()[0].Runs }
	after := runs()
	waitFor(t, "40 evaluations after the reload", func() bool { return runs() >= after+40 })
	if got := svc(); got != 3 {
		t.Fatalf("%d replicas after a reload right after the burst, want 3 held by the window", got)
	}
}

// burstNode starts a node whose policy scales a process-actuated service to
// 3 while requests are in flight and asks for 1 when none are, with the
// given scale-down window; it returns once a burst of load has scaled it
// to 3 and the load has stopped.
func burstNode(t *testing.T, window string) (*testNode, func() int) {
	t.Helper()
	script := filepath.Join(t.TempDir(), "busy.lua")
	os.WriteFile(script, []byte(`
function evaluate(m)
  local s = m.services.api
  if s.in_flight >= 4 then
    scale("api", 3, "busy: " .. s.in_flight .. " in flight")
  elseif s.in_flight == 0 then
    scale("api", 1, "quiet")
  end
end
`), 0o600)
	yaml := listenAny + fmt.Sprintf(`services:
  api:
    balancer: least_request
    scale: {actuator: process, command: "{self} sample-backend {addr}", min: 1, max: 4, behavior: {scale_down_window: %s}}
policies:
  busy: {script: %q, interval: 50ms, services: [api]}
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`, window, script)
	n := startNode(t, yaml)
	svc := func() int { return len(n.state.Load().services["api"].Healthy()) }
	waitFor(t, "the first replica", func() bool { return svc() == 1 })
	stop := load(h1Client(), "https://"+n.Addrs().HTTPS+"/?latency=50ms", 8, nil)
	waitFor(t, "scaled to 3 under load", func() bool { return svc() == 3 })
	stop()
	return n, svc
}
