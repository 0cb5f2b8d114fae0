package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"perigee/aggregator/vmtest"
	"perigee/certs"
	"perigee/logtest"
	"perigee/telemetry/wire"
)

// The aggregator tier end to end, all real processes: four `perigee serve`
// nodes ship to two `perigee aggregate` processes (each node lists both,
// in turn), both export into one Debian victoria-metrics. Each aggregator
// sits behind a proxy that loses its answer to the first batch each node
// gets stored through it, so every node's first batch is stored by both
// aggregators and sent twice to one of them; then the first aggregator is
// SIGKILLed mid-run and restarted. At the end victoria-metrics holds every
// sample the nodes had acknowledged exactly once, and no aggregator stored
// a batch twice.
func TestTelemetryTierExactlyOnceIntoVictoriaMetrics(t *testing.T) {
	dir := t.TempDir()
	vmAddr := vmtest.Start(t)

	// One certificate for both aggregators and their proxies, which every
	// node trusts.
	cert, err := certs.SelfSigned(nil)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := certs.WritePEM(cert, certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}

	nodes := []string{"n1", "n2", "n3", "n4"}
	var tokens strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&tokens, "  %s: tier-token-%s-0123456789\n", n, n)
	}
	type aggProc struct {
		addr, config string
		proxy        *answerLosingProxy
		cmd          *exec.Cmd
		out          *logtest.Buffer
	}
	aggs := make([]*aggProc, 2)
	for i := range aggs {
		// Port 0: the nodes reach it through its proxy, which learns the
		// address from its log, so no port is chosen before it is bound.
		a := &aggProc{config: filepath.Join(dir, fmt.Sprintf("agg%d.yaml", i)), proxy: newAnswerLosingProxy(t, *cert, pool)}
		yaml := fmt.Sprintf("listen: \"127.0.0.1:0\"\ntls: {cert: %q, key: %q}\ndata_dir: %q\nexport: {url: \"http://%s/api/v1/write\"}\ntokens:\n%s",
			certFile, keyFile, filepath.Join(dir, fmt.Sprintf("agg%d", i)), vmAddr, tokens.String())
		if err := os.WriteFile(a.config, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		aggs[i] = a
	}
	start := func(a *aggProc) {
		t.Helper()
		a.out = &logtest.Buffer{}
		a.cmd = exec.Command(bin, "aggregate", "--config", a.config, "--log-format", "json")
		a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
		if err := a.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmd := a.cmd
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		})
		eventually(t, "an aggregator to say where it serves", func() bool { a.addr = servingAddr(a.out.String()); return a.addr != "" })
		addr := a.addr // the proxy reads its own copy
		a.proxy.target.Store(&addr)
		eventually(t, "aggregator "+a.addr+" serving", func() bool { return status(client, "https://"+a.addr+"/v1/fleet") == 200 })
	}
	stop := func(a *aggProc, sig syscall.Signal) {
		t.Helper()
		_ = a.cmd.Process.Signal(sig)
		err := a.cmd.Wait()
		if sig == syscall.SIGTERM && err != nil {
			t.Fatalf("aggregator %s after SIGTERM: %v\n%s", a.addr, err, a.out)
		}
	}
	for _, a := range aggs {
		start(a)
	}

	be := backendAddr(t)
	admins := map[string]string{}
	var children []*child
	for i, n := range nodes {
		// Half the nodes prefer the first aggregator, half the second.
		first, second := aggs[0].proxy.url, aggs[1].proxy.url
		if i%2 == 1 {
			first, second = second, first
		}
		tokenFile := filepath.Join(dir, n+".token")
		if err := os.WriteFile(tokenFile, []byte("tier-token-"+n+"-0123456789\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		admins[n] = "127.0.0.1:" + freePort(t, "127.0.0.1")
		yaml := fmt.Sprintf(`node: {id: %s, region: tier}
listen: {https: "127.0.0.1:%s", admin: %q}
services:
  api: {backends: [{url: "http://%s"}]}
routes:
  - {match: {path_prefix: /}, service: api}
telemetry:
  aggregator: %q
  failover: [%q]
  token_file: %q
  ca_file: %q
  spool: {dir: %q}
  interval: 200ms
`, n, freePort(t, "127.0.0.1"), admins[n], be, first, second, tokenFile, certFile, filepath.Join(dir, n+"-spool"))
		children = append(children, serveChild(t, writeConfig(t, yaml)))
	}
	// Each admin address is its own node's: the figures below are read there.
	for _, n := range nodes {
		eventually(t, n+"'s admin API answering as "+n, func() bool {
			var st struct{ Node struct{ ID string } }
			resp, err := http.Get("http://" + admins[n] + "/status")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Node.ID == n
		})
	}
	type shipStats struct {
		BatchesAcked uint64 `json:"batches_acked"`
		RecordsAcked struct {
			Samples uint64 `json:"samples"`
		} `json:"records_acked"`
	}
	stats := func(n string) shipStats {
		var st shipStats
		resp, err := http.Get("http://" + admins[n] + "/telemetry")
		if err != nil {
			return st
		}
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(&st)
		return st
	}
	// progress waits until every node has had more batches acknowledged.
	progress := func(what string, more uint64) {
		t.Helper()
		base := map[string]uint64{}
		for _, n := range nodes {
			base[n] = stats(n).BatchesAcked
		}
		eventually(t, what, func() bool {
			for _, n := range nodes {
				if stats(n).BatchesAcked < base[n]+more {
					return false
				}
			}
			return true
		})
	}
	progress("every node shipping", 3)
	stop(aggs[0], syscall.SIGKILL) // mid-ingest: each node posts a batch a second, its one sample
	progress("every node shipping through the other aggregator", 5)
	start(aggs[0])
	progress("every node shipping after the restart", 5)

	// Freeze the acknowledgements: with both aggregators stopped, what the
	// nodes count as acknowledged is final.
	for _, a := range aggs {
		stop(a, syscall.SIGTERM)
	}
	var acked map[string]shipStats
	eventually(t, "the nodes' counts to settle", func() bool {
		before := map[string]shipStats{}
		for _, n := range nodes {
			before[n] = stats(n)
		}
		time.Sleep(500 * time.Millisecond)
		for _, n := range nodes {
			if stats(n) != before[n] || before[n].BatchesAcked == 0 {
				return false
			}
		}
		acked = before
		return true
	})
	for _, c := range children {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}

	// Both aggregators again, with no node sending: each exports what it
	// stored and had not yet pushed.
	restarted := time.Now()
	for _, a := range aggs {
		start(a)
	}
	resentTo := map[string]bool{} // nodes whose batch an aggregator was sent again
	for i, a := range aggs {
		eventually(t, "aggregator "+a.addr+" to export everything it stored", func() bool {
			return exportCaughtUp(client, "https://"+a.addr+"/metrics").After(restarted)
		})
		var fleet struct{ Batches int }
		resp, err := client.Get("https://" + a.addr + "/v1/fleet")
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(resp.Body).Decode(&fleet)
		resp.Body.Close()
		for _, n := range checkLedger(t, fmt.Sprintf("aggregator %d", i), a.proxy, nodes, fleet.Batches) {
			resentTo[n] = true
		}
	}
	for _, n := range nodes {
		if !resentTo[n] {
			t.Errorf("no aggregator was sent %s's batch again after its answer was lost: dedup went untested", n)
		}
	}

	for _, n := range nodes {
		want := fmt.Sprint(acked[n].RecordsAcked.Samples)
		for _, q := range []string{
			fmt.Sprintf(`sum(count_over_time(perigee_node_rps{node=%q,region="tier"}[1h]))`, n),
			fmt.Sprintf(`sum(count_over_time(perigee_node_memory_bytes{node=%q}[1h]))`, n),
		} {
			if got := vmtest.Query(vmAddr, q); got != want {
				t.Errorf("%s = %s, want %s (the samples %s acknowledged)", q, got, want, n)
			}
		}
	}
	t.Logf("the nodes acknowledged %+v", acked)
}

// checkLedger holds an aggregator to what its proxy saw it answer: it
// never answered "stored" twice for one batch, it answered every batch
// its proxy lost the answer to, and sent to it again, "duplicate"; and
// after its restarts it holds every batch it answered "stored", plus at
// most those whose exchange broke off (a SIGKILL may leave one of those
// stored, unanswered). It returns the nodes whose lost batch was sent to
// it again.
func checkLedger(t *testing.T, name string, p *answerLosingProxy, nodes []string, holds int) (resent []string) {
	t.Helper()
	answers, lost := p.ledger()
	for _, n := range nodes {
		id, ok := lost[n]
		if !ok {
			t.Errorf("%s: its proxy lost no answer to %s: nothing was sent twice", name, n)
			continue
		}
		if a := answers[id]; len(a) > 1 {
			resent = append(resent, n)
			if !slices.Contains(a, "duplicate") {
				t.Errorf("%s: %s's batch %d, whose answer was lost, was sent to it again and answered %v", name, n, id.seq, a)
			}
		}
	}
	stored, broken := 0, 0
	for id, a := range answers {
		s := occurrences(a, "stored")
		if s > 1 {
			t.Errorf("%s stored %s's batch %d %d times: answers %v", name, id.node, id.seq, s, a)
		}
		switch {
		case s > 0:
			stored++
		case slices.Contains(a, resultBroken):
			broken++
		}
	}
	t.Logf("%s answered %d batches stored, lost the answer to %d, and holds %d; %d exchanges broke off", name, stored, len(lost), holds, broken)
	if holds < stored || holds > stored+broken {
		t.Errorf("%s holds %d batches; it answered %d stored (and %d broke off)", name, holds, stored, broken)
	}
	return resent
}

func occurrences(results []string, r string) int {
	n := 0
	for _, x := range results {
		if x == r {
			n++
		}
	}
	return n
}

// batchID names one batch: a node's sequence number.
type batchID struct {
	node string
	seq  uint64
}

// The results answerLosingProxy records for a batch, besides the
// aggregator's own ("stored", "duplicate"): the aggregator was not there
// (so it stored nothing), or the exchange broke off after the batch may
// have reached it.
const (
	resultUnreachable = "unreachable"
	resultBroken      = "broken"
)

// answerLosingProxy stands between nodes and one aggregator, which the
// nodes cannot tell apart from it (it serves the aggregators'
// certificate). It passes every request on and records what the aggregator
// answered to each batch. The test, not timing, decides what is lost: the
// aggregator's answer to the first batch each node gets stored through
// it. That node hears nothing, fails over and sends the batch again.
type answerLosingProxy struct {
	url      string
	upstream *http.Client
	target   atomic.Pointer[string] // the aggregator's address; it moves on a restart

	mu      sync.Mutex
	answers map[batchID][]string // what the aggregator answered, in order
	lost    map[string]batchID   // per node, the batch whose answer was lost
}

func newAnswerLosingProxy(t *testing.T, cert tls.Certificate, pool *x509.CertPool) *answerLosingProxy {
	p := &answerLosingProxy{
		upstream: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}},
		answers:  map[batchID][]string{}, lost: map[string]batchID{},
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

func (p *answerLosingProxy) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway) // not a 200, which the node would take for stored
		return
	}
	// The node bounds each attempt; its request's context bounds this one.
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "https://"+*p.target.Load()+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	id, isBatch := batchOf(r, body)
	resp, err := p.upstream.Do(req)
	if err != nil {
		if isBatch {
			p.record(id, brokenOrUnreachable(err))
		}
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		if isBatch {
			p.record(id, resultBroken)
		}
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if isBatch && p.answered(id, resp.StatusCode, answer) {
		panic(http.ErrAbortHandler) // the answer is lost: the node's stream breaks off
	}
	for k, v := range resp.Header {
		if k != "Alt-Svc" { // the proxy does not do HTTP/3
			w.Header()[k] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(answer)
}

// batchOf names the batch a request posts, if it posts one.
func batchOf(r *http.Request, body []byte) (batchID, bool) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/ingest" {
		return batchID{}, false
	}
	f, err := wire.ParseFrame(body, -1)
	if err != nil {
		return batchID{}, false
	}
	return batchID{f.Node, f.Seq}, true
}

func brokenOrUnreachable(err error) string {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return resultUnreachable
	}
	return resultBroken
}

func (p *answerLosingProxy) record(id batchID, result string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answers[id] = append(p.answers[id], result)
}

// answered records the aggregator's answer to a batch and reports whether
// the proxy loses it.
func (p *answerLosingProxy) answered(id batchID, status int, answer []byte) (lose bool) {
	result := strconv.Itoa(status)
	var ok struct{ Status string }
	if status == http.StatusOK && json.Unmarshal(answer, &ok) == nil {
		result = ok.Status
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answers[id] = append(p.answers[id], result)
	if _, done := p.lost[id.node]; done || result != "stored" {
		return false
	}
	p.lost[id.node] = id
	return true
}

// ledger is what the aggregator behind p answered, per batch.
func (p *answerLosingProxy) ledger() (answers map[batchID][]string, lost map[string]batchID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.answers), maps.Clone(p.lost)
}

// servingAddr is the address a `perigee aggregate` said it serves on, or ""
// before it has.
func servingAddr(log string) string {
	for line := range strings.Lines(log) {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "aggregator serving" {
			return rec.Addr
		}
	}
	return ""
}

// exportCaughtUp reads when an aggregator's export last had nothing left
// to push.
func exportCaughtUp(c *http.Client, metricsURL string) time.Time {
	resp, err := c.Get(metricsURL)
	if err != nil {
		return time.Time{}
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "perigee_aggregator_export_caught_up_timestamp_seconds "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return time.UnixMilli(int64(f * 1000))
		}
	}
	return time.Time{}
}
