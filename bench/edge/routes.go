package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"perigee/telemetry"
)

// perigee's routes, as edge's in-process BenchmarkNode builds them: plain
// proxies to the backend; wasm runs one trivial transform, modules/wat's
// poweredby, which stamps x-powered-by on the response; lua is a route
// whose gate a Lua policy limits every 50ms, so high that it never refuses
// (a refusal would be a 429, counted in errors). Each is its own target,
// perigee/wasm and perigee/lua, sharing perigee's process.
var allRoutes = []string{"plain", "wasm", "lua"}

const (
	wasmModule = "poweredby.wasm"
	poweredBy  = "perigee-wat" // the x-powered-by poweredby sets
	policyName = "roomy"
	roomyLua   = `function evaluate(m) limit("lua", 1000000000, 1000000000, "roomy") end`
)

// routeFiles returns the module and the policy script perigee's config
// names for the chosen routes, empty for a route left out, and writes the
// script into dir.
func routeFiles(o options, dir string) (module, script string, err error) {
	if slices.Contains(o.routes, "wasm") {
		if module, err = filepath.Abs(filepath.Join(o.modules, wasmModule)); err != nil {
			return "", "", err
		}
	}
	if slices.Contains(o.routes, "lua") {
		script = filepath.Join(dir, policyName+".lua")
		if err := os.WriteFile(script, []byte(roomyLua), 0o644); err != nil {
			return "", "", fmt.Errorf("policy script: %w", err)
		}
	}
	return module, script, nil
}

// routeTargets are perigee's routes other than plain, each a target on
// perigee's process. Before lua is loaded its policy must have limited the
// gate, so the run measures a route with a policy in force.
func routeTargets(ctx context.Context, o options, pg *target) ([]*target, error) {
	var out []*target
	for _, r := range o.routes {
		if r == "plain" {
			continue
		}
		if r == "lua" {
			if err := waitLimited(ctx, pg); err != nil {
				return nil, err
			}
		}
		t := *pg
		t.name, t.route, t.path = pg.name+"/"+r, r, "/"+r+"/"
		out = append(out, &t)
	}
	return out, nil
}

// waitLimited polls perigee's decision log until the policy has applied
// its limit to the lua route.
func waitLimited(ctx context.Context, pg *target) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		var ds []telemetry.Decision
		err := adminGet(ctx, pg.admin, "/decisions?n=100", &ds)
		for _, d := range ds {
			if d.Policy == policyName && d.Action == "limit" && d.Target == "lua" && d.Applied {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("policy %s did not limit route lua within 15s (last error: %v)\n%s", policyName, err, pg.proc.logTail())
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// policyStatus is what GET /policies shows of a policy that matters here.
type policyStatus struct {
	Name   string `json:"name"`
	Runs   uint64 `json:"runs"`
	Errors uint64 `json:"errors"`
}

// policyRuns reads how often the policy has run, and failed, so far.
func policyRuns(ctx context.Context, pg *target) (policyStatus, error) {
	var ps []policyStatus
	if err := adminGet(ctx, pg.admin, "/policies", &ps); err != nil {
		return policyStatus{}, err
	}
	for _, p := range ps {
		if p.Name == policyName {
			return p, nil
		}
	}
	return policyStatus{}, fmt.Errorf("policy %s not in %s's GET /policies", policyName, pg.name)
}

// policyNote says how often the policy ran during the rounds, for the
// report: proof that perigee/lua was measured with the policy evaluating.
func policyNote(before, after policyStatus) string {
	return fmt.Sprintf("perigee/lua: policy %s ran %d times during the rounds (%d failed), each calling limit(\"lua\", 1e9, 1e9) on the limit it applied before them\n",
		policyName, after.Runs-before.Runs, after.Errors-before.Errors)
}

func adminGet(ctx context.Context, addr, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("admin GET %s: %w", path, err)
	}
	return nil
}
