package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"perigee/geo/demodb"
	"perigee/logtest"
)

// bin is the perigee binary the tests run as real child processes.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "perigee-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "perigee")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building perigee: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// perigee runs the binary to completion and returns its exit code and output.
func perigee(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidate(t *testing.T) {
	code, out := perigee(t, "validate", "--config", "../../edge/config/testdata/example.yaml")
	if code != 0 || !strings.Contains(out, "ok (1 service, 1 route)") {
		t.Fatalf("valid config: exit %d: %s", code, out)
	}
	bad := writeConfig(t, "listen: {https: \"127.0.0.1:1\"}\nservices:\n  api: {balancer: fastest, backends: [{url: \"http://127.0.0.1:2\"}]}\n")
	code, out = perigee(t, "validate", "--config", bad)
	if code != 1 || !strings.Contains(out, bad+`:3: service "api": unknown balancer "fastest"`) {
		t.Fatalf("bad config: exit %d: %s", code, out)
	}
	dir := t.TempDir()
	lua := filepath.Join(dir, "p.lua")
	mod := filepath.Join(dir, "t.wasm")
	os.WriteFile(lua, []byte("function evaluate(m)\n  return {\nend\n"), 0o600)
	os.WriteFile(mod, []byte("text\n"), 0o600)
	many := writeConfig(t, `listen: {https: "127.0.0.1:1"}
services:
  api: {backends: [{url: "http://127.0.0.1:2"}], colour: red}
routes: [{service: apx}]
transforms: {t: {module: `+mod+`}}
policies: {p: {script: `+lua+`}}
`)
	code, out = perigee(t, "validate", "--config", many)
	for _, want := range []string{many + `:3: unknown key "colour"`, many + `:4: route "route-0": unknown service "apx"`, many + `:5: transform "t"`, many + `:6: policy "p": ` + lua + `:3: syntax error`} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("several errors: exit %d, want %q in:\n%s", code, want, out)
		}
	}
	if code, out := perigee(t, "validate"); code != 2 || !strings.Contains(out, "--config is required") {
		t.Fatalf("no --config: exit %d: %s", code, out)
	}
	if code, _ := perigee(t, "frobnicate"); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
	if code, out := perigee(t, "version"); code != 0 || !strings.HasPrefix(out, "perigee ") {
		t.Fatalf("version: %d %s", code, out)
	}
}

func TestPolicyTestReplaysATrace(t *testing.T) {
	svg := filepath.Join(t.TempDir(), "plot.svg")
	code, out := perigee(t, "policy", "test", "../../policies/queue_depth.lua", "--trace", "../../policies/traces/flash_sale.csv", "--plot", svg)
	if code != 0 || !strings.Contains(out, "summary:") {
		t.Fatalf("exit %d: %s", code, out)
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.Contains(b, []byte("<svg")) {
		t.Fatalf("no plot written: %v", err)
	}
	if code, out := perigee(t, "policy", "test", "../../policies/queue_depth.lua"); code != 2 || !strings.Contains(out, "usage") {
		t.Fatalf("missing --trace: exit %d: %s", code, out)
	}
}

// handedOut are the ports freePort returned: the kernel may offer a port it
// just let go again, and two children given one port (n1's and n3's admin,
// say) make the second fail to start while a test reads the first's
// figures as the second's.
var handedOut struct {
	sync.Mutex
	ports map[string]bool
}

// freePort returns a port free on TCP and UDP at host, for a child to
// bind, and never one it returned before in this process.
func freePort(t *testing.T, host string) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[string]bool{}
	}
	for range 100 {
		ln, err := net.Listen("tcp", host+":0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, port, _ := net.SplitHostPort(addr)
		if handedOut.ports[port] {
			continue
		}
		if pc, err := net.ListenPacket("udp", addr); err == nil {
			pc.Close()
			handedOut.ports[port] = true
			return port
		}
	}
	t.Fatal("no free port")
	return ""
}

// child is a running `perigee serve`.
type child struct {
	cmd *exec.Cmd
	out *logtest.Buffer
}

func serveChild(t *testing.T, config string) *child {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--config", config, "--log-format", "json")
	out := &logtest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, out: out}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return c
}

func insecureClient(h3 bool) *http.Client {
	tlsConf := &tls.Config{InsecureSkipVerify: true}
	if h3 {
		return &http.Client{Transport: &http3.Transport{TLSClientConfig: tlsConf}, Timeout: 10 * time.Second}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func status(c *http.Client, url string) int {
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// The real binary serves HTTP/2 and HTTP/3, reloads on SIGHUP, keeps its
// config when a reload is bad, and drains and exits 0 on SIGTERM.
func TestServeReloadAndTerminate(t *testing.T) {
	https, admin, be := "127.0.0.1:"+freePort(t, "127.0.0.1"), "127.0.0.1:"+freePort(t, "127.0.0.1"), "127.0.0.1:"+freePort(t, "127.0.0.1")
	yaml := func(prefix string) string {
		return fmt.Sprintf(`listen: {https: %q, admin: %q}
sample_backends: [{listen: %q, name: child-backend}]
services:
  api: {backends: [{url: "http://%s"}]}
routes:
  - {match: {path_prefix: %s}, service: api}
`, https, admin, be, be, prefix)
	}
	path := writeConfig(t, yaml("/one"))
	c := serveChild(t, path)
	h2, h3 := insecureClient(false), insecureClient(true)
	eventually(t, "serving over HTTP/2", func() bool { return status(h2, "https://"+https+"/one") == 200 })
	if got := status(h3, "https://"+https+"/one"); got != 200 {
		t.Fatalf("HTTP/3: %d", got)
	}

	os.WriteFile(path, []byte(yaml("/two")), 0o600)
	c.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, "the reloaded route", func() bool { return status(h2, "https://"+https+"/two") == 200 })
	if got := status(h2, "https://"+https+"/one"); got != 404 {
		t.Fatalf("old route after reload: %d", got)
	}

	os.WriteFile(path, []byte(yaml("/three")+"nonsense: [\n"), 0o600)
	c.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, "the refused reload in the log", func() bool { return strings.Contains(c.out.String(), "reload refused") })
	if got := status(h2, "https://"+https+"/two"); got != 200 {
		t.Fatalf("a bad reload broke the running config: %d", got)
	}

	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, c.out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30s after SIGTERM")
	}
}

// Three real nodes on distinct loopback addresses (in Frankfurt, Virginia
// and Tokyo) form a mesh; one is killed with SIGKILL, the others see it
// dead, keep a leader, and the geo router moves its clients away.
func TestMeshOfRealProcessesSurvivesSIGKILL(t *testing.T) {
	type node struct {
		id, host, https, admin, gossip string
		lat, lon                       float64
	}
	places := [][2]float64{{50.11, 8.68}, {39.04, -77.49}, {35.68, 139.69}}
	var nodes []node
	for i := 1; i <= 3; i++ {
		host := fmt.Sprintf("127.0.0.%d", 10+i)
		nodes = append(nodes, node{fmt.Sprintf("n%d", i), host, freePort(t, host), freePort(t, host), freePort(t, host), places[i-1][0], places[i-1][1]})
	}
	db := filepath.Join(t.TempDir(), "city.mmdb")
	if err := demodb.Write(db); err != nil {
		t.Fatal(err)
	}
	be := backendAddr(t)
	var children []*child
	for _, n := range nodes {
		yaml := fmt.Sprintf(`node: {id: %s, region: test, location: {lat: %v, lon: %v}, public_url: "https://%s:%s"}
listen: {https: "%s:%s", admin: "%s:%s"}
services:
  api: {backends: [{url: "http://%s"}]}
routes:
  - {match: {path_prefix: /}, service: api, steer: redirect}
mesh:
  bind: "%s:%s"
  join: ["%s:%s"]
geo: {database: %q}
`, n.id, n.lat, n.lon, n.host, n.https, n.host, n.https, n.host, n.admin, be, n.host, n.gossip, nodes[0].host, nodes[0].gossip, db)
		children = append(children, serveChild(t, writeConfig(t, yaml)))
	}
	states := func(n node) map[string]string {
		resp, err := http.Get(fmt.Sprintf("http://%s:%s/members", n.host, n.admin))
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var ms []struct{ ID, State string }
		json.NewDecoder(resp.Body).Decode(&ms)
		out := map[string]string{}
		for _, m := range ms {
			out[m.ID] = m.State
		}
		return out
	}
	eventually(t, "all three see each other alive", func() bool {
		for _, n := range nodes {
			s := states(n)
			if s["n1"] != "alive" || s["n2"] != "alive" || s["n3"] != "alive" {
				return false
			}
		}
		return true
	})
	// Operators alert on the same view: members by state, and one leader
	// once the region agrees.
	scrape := func(n node) string {
		resp, err := http.Get(fmt.Sprintf("http://%s:%s/metrics", n.host, n.admin))
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	for _, n := range nodes {
		m := scrape(n)
		if !strings.Contains(m, `perigee_mesh_members{state="alive"} 3`) {
			t.Errorf("%s: /metrics lacks three alive members", n.id)
		}
		if !strings.Contains(m, `perigee_mesh_messages_dropped_total{reason="queue_full"} `) {
			t.Errorf("%s: /metrics lacks the mesh's dropped sends", n.id)
		}
	}
	eventually(t, "one leader in /metrics", func() bool {
		leaders := 0
		for _, n := range nodes {
			if strings.Contains(scrape(n), "\nperigee_mesh_leader 1\n") {
				leaders++
			}
		}
		return leaders == 1
	})
	best := func(n node, client string) string {
		resp, err := http.Get(fmt.Sprintf("http://%s:%s/geo/decide?ip=%s", n.host, n.admin, client))
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var d struct{ Best struct{ ID string } }
		json.NewDecoder(resp.Body).Decode(&d)
		return d.Best.ID
	}
	const frankfurtClient = "85.214.0.1"
	eventually(t, "a Frankfurt client sent to n1", func() bool { return best(nodes[2], frankfurtClient) == "n1" })
	children[0].cmd.Process.Kill()
	children[0].cmd.Wait()
	eventually(t, "n1's death seen by the others", func() bool {
		return states(nodes[1])["n1"] == "dead" && states(nodes[2])["n1"] == "dead"
	})
	eventually(t, "a new leader among the living", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://%s:%s/regions", nodes[2].host, nodes[2].admin))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var regions []struct{ Name, Leader string }
		json.NewDecoder(resp.Body).Decode(&regions)
		return len(regions) == 1 && regions[0].Leader == "n2"
	})
	if got := best(nodes[2], frankfurtClient); got != "n2" {
		t.Fatalf("with n1 dead a Frankfurt client goes to %q, want n2 (Virginia is nearer than Tokyo)", got)
	}
}

// backendAddr starts a trivial backend in this process.
func backendAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return ln.Addr().String()
}
