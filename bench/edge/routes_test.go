package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"perigee/edge/config"
)

// The config perigee gets must be one perigee accepts, module and policy
// compiled, with each chosen route and only those.
func TestPerigeeConfigChecks(t *testing.T) {
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		t.Skip("wat2wasm not installed (Debian package wabt)")
	}
	modules := t.TempDir()
	if out, err := exec.Command("wat2wasm", "../../modules/wat/poweredby.wat", "-o", filepath.Join(modules, wasmModule)).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, out)
	}
	for _, routes := range [][]string{allRoutes, {"plain"}, {"plain", "lua"}} {
		t.Run(strings.Join(routes, ","), func(t *testing.T) {
			dir := t.TempDir()
			cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			if err := writeCert(cert, key); err != nil {
				t.Fatal(err)
			}
			o := options{routes: routes, modules: modules, perigeeBin: "bin/perigee"}
			argv, _, err := configure(o, dir, "perigee", "127.0.0.1:40001", "127.0.0.1:40002", "127.0.0.1:40003", cert, key)
			if err != nil {
				t.Fatal(err)
			}
			c, err := config.Check(context.Background(), argv[3])
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range c.Routes {
				names = append(names, r.Name)
				if want := r.Name == "wasm"; slices.Equal(r.Transforms, []string{"poweredby"}) != want {
					t.Errorf("route %s has transforms %v", r.Name, r.Transforms)
				}
			}
			if !slices.Equal(names, routes) {
				t.Errorf("routes %v, want %v", names, routes)
			}
			if _, ok := c.Transforms["poweredby"]; ok != slices.Contains(routes, "wasm") {
				t.Errorf("transforms %v with routes %v", c.Transforms, routes)
			}
			p, ok := c.Policies[policyName]
			if ok != slices.Contains(routes, "lua") || ok && p.Interval.D() != 50*time.Millisecond {
				t.Errorf("policies %v with routes %v", c.Policies, routes)
			}
		})
	}
}

// The probe of perigee/wasm fails unless the answer carries the header
// the transform sets.
func TestProbeWantsTheTransformsHeader(t *testing.T) {
	for _, stamp := range []bool{false, true} {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", "bench")
			if stamp {
				w.Header().Set("X-Powered-By", poweredBy)
			}
			w.Write(make([]byte, 64))
		}))
		tg := &target{name: "perigee/wasm", route: "wasm", path: "/wasm/", addr: srv.Listener.Addr().String(), tls: true}
		err := probe(context.Background(), runKey{tg, "h1"}, 64)
		srv.Close()
		if stamp && err != nil {
			t.Errorf("stamped: %v", err)
		}
		if !stamp && (err == nil || !strings.Contains(err.Error(), "did not run")) {
			t.Errorf("unstamped: err %v, want the transform did not run", err)
		}
	}
}

// perigee's other routes are reported against its plain one, beside its
// ratios to the other targets.
func TestReportRatiosRoutesToPlain(t *testing.T) {
	pg := &target{name: "perigee"}
	wasm := &target{name: "perigee/wasm", route: "wasm"}
	lua := &target{name: "perigee/lua", route: "lua"}
	nginx := &target{name: "nginx"}
	at := func(rps float64, p99ms, us float64) []result {
		return []result{{rps: rps, p99: time.Duration(p99ms * float64(time.Millisecond)), usPerReq: us}}
	}
	runs := []runKey{{pg, "h1"}, {wasm, "h1"}, {lua, "h1"}, {nginx, "h1"}}
	results := map[runKey][]result{
		runs[0]: at(10000, 10, 50),
		runs[1]: at(8000, 12, 60),
		runs[2]: at(9000, 10, 55),
		runs[3]: at(20000, 5, 20),
	}
	o := options{rounds: 1, protos: []string{"h1"}, routes: allRoutes}
	out := report(o, runs, results)
	for _, want := range [][]string{
		{"perigee/wasm", "HTTP/1.1", "8000"},
		{"HTTP/1.1", "perigee", "vs", "nginx", "0.50x", "2.00x", "2.50x"},
		{"HTTP/1.1", "perigee/wasm", "vs", "perigee", "0.80x", "1.20x", "1.20x"},
		{"HTTP/1.1", "perigee/lua", "vs", "perigee", "0.90x", "1.00x", "1.10x"},
	} {
		if !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool {
			f := strings.Fields(l)
			return len(f) >= len(want) && slices.Equal(f[:len(want)], want)
		}) {
			t.Errorf("no line starting %q in\n%s", want, out)
		}
	}
}
