package aggregator_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"perigee/aggregator"
	"perigee/telemetry"
	"perigee/telemetry/ship"
	"perigee/units"
)

const (
	tokenA = "token-of-node-a-0123456789"
	tokenB = "token-of-node-b-0123456789"
)

func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// agg is an aggregator under test, in this process.
type agg struct {
	addr, caFile, dataDir string
	client                *http.Client
	stop                  func()
}

func startAggregator(t *testing.T, mutate func(*aggregator.Config)) *agg {
	t.Helper()
	return startAggregatorLogging(t, mutate, testLog(t))
}

// startAggregatorLogging is startAggregator logging to log.
func startAggregatorLogging(t *testing.T, mutate func(*aggregator.Config), log *slog.Logger) *agg {
	t.Helper()
	dir := t.TempDir()
	cfg := aggregator.Config{
		Listen:  "127.0.0.1:0",
		Tokens:  map[string]string{"node-a": tokenA, "node-b": tokenB},
		DataDir: dir,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := aggregator.NewServer(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	a := &agg{addr: srv.Addr(), caFile: filepath.Join(cfg.DataDir, aggregator.DevCertFile), dataDir: cfg.DataDir}
	a.client = httpsClient(t, a.caFile)
	a.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("aggregator: %v", err)
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			a.stop()
		}
	})
	return a
}

// manyNodes gives nodes n-0 to n-(count-1) a token each, token(i), to
// add to an aggregator's config.
func manyNodes(count int) (addTokens func(*aggregator.Config), token func(i int) string) {
	token = func(i int) string { return fmt.Sprintf("token-of-node-%d-0123456789", i) }
	return func(c *aggregator.Config) {
		for i := range count {
			c.Tokens[fmt.Sprintf("n-%d", i)] = token(i)
		}
	}, token
}

// httpsClient trusts caFile. A request waits for its answer, bounded only
// by the test binary's -timeout, less time to report: how long an answer
// takes is no test's point, and a guess (it was 20 s) expired on a long
// query under -race on two busy cores. A request that hangs still fails
// its test, with its own error, before go test panics.
func httpsClient(t *testing.T, caFile string) *http.Client {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	if deadline, ok := t.Deadline(); ok {
		c.Timeout = time.Until(deadline) * 9 / 10
	}
	return c
}

func (a *agg) url(path string) string { return "https://" + a.addr + path }

func (a *agg) getJSON(t testing.TB, path string, v any) {
	t.Helper()
	resp, err := a.client.Get(a.url(path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

func (a *agg) metrics(t testing.TB) string {
	t.Helper()
	_, b := a.get(t, "/metrics")
	return string(b)
}

// get is the status and body of GET path.
func (a *agg) get(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := a.client.Get(a.url(path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, b
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newShipper(t *testing.T, a *agg, node, token string, mutate func(*ship.Config)) *ship.Shipper {
	t.Helper()
	dir := t.TempDir()
	cfg := ship.Config{
		Aggregator: "https://" + a.addr, TokenFile: writeFile(t, dir, "token", token+"\n"),
		Spool: ship.Spool{Dir: filepath.Join(dir, "spool")}, Interval: units.Duration(20 * time.Millisecond),
		Node: node, Region: "eu-west", CAFile: a.caFile, RetryMax: 300 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := ship.New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sample(node string, i int) telemetry.NodeSample {
	var h telemetry.Histogram
	h.Observe(time.Duration(i%50+1) * time.Millisecond)
	return telemetry.NodeSample{
		Node: node, Region: "eu-west", Time: time.Now(), Window: time.Second, RPS: float64(i), CPU: 0.5, MemBytes: 1 << 20,
		Services: map[string]telemetry.ServiceSample{"api": {RPS: float64(i), Latency: h.Snapshot(), Backends: 2, HealthyBackends: 2}},
	}
}

// freePort finds a loopback port free on both TCP and UDP, for an
// aggregator that must come back on the same address after a restart.
func freePort(t testing.TB) string {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

func fleetNode(t testing.TB, a *agg, node string) (aggregator.NodeView, bool) {
	var v aggregator.FleetView
	a.getJSON(t, "/v1/fleet", &v)
	for _, n := range v.Nodes {
		if n.Node == node {
			return n, true
		}
	}
	return aggregator.NodeView{}, false
}

func metricValue(body, series string) string {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, series+" ") {
			return strings.TrimPrefix(line, series+" ")
		}
	}
	return fmt.Sprintf("<%s absent>", series)
}
