package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"perigee/aggregator/vmtest"
	"perigee/certs"
)

// The aggregator tier end to end, all real processes: four `perigee serve`
// nodes ship to two `perigee aggregate` processes (each node lists both,
// in turn), both export into one Debian victoria-metrics. Half the nodes
// reach the second aggregator through a proxy that loses the answers of
// its first connections, so their first batches are stored by both
// aggregators; then the first aggregator is SIGKILLed mid-run and
// restarted. At the end victoria-metrics holds every sample the nodes had
// acknowledged exactly once.
func TestTelemetryTierExactlyOnceIntoVictoriaMetrics(t *testing.T) {
	dir := t.TempDir()
	vmAddr := vmtest.Start(t)

	// One certificate for both aggregators, which every node trusts.
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
		cmd          *exec.Cmd
		out          *lockedBuffer
	}
	aggs := make([]*aggProc, 2)
	for i := range aggs {
		a := &aggProc{addr: "127.0.0.1:" + freePort(t, "127.0.0.1")}
		a.config = filepath.Join(dir, fmt.Sprintf("agg%d.yaml", i))
		yaml := fmt.Sprintf("listen: %q\ntls: {cert: %q, key: %q}\ndata_dir: %q\nexport: {url: \"http://%s/api/v1/write\"}\ntokens:\n%s",
			a.addr, certFile, keyFile, filepath.Join(dir, fmt.Sprintf("agg%d", i)), vmAddr, tokens.String())
		if err := os.WriteFile(a.config, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		aggs[i] = a
	}
	start := func(a *aggProc) {
		t.Helper()
		a.out = &lockedBuffer{}
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

	// Two nodes behind it: each one's clock probe at start, then each
	// one's first batch.
	lossy := answerLosingProxy(t, aggs[1].addr, 4)
	be := backendAddr(t)
	admins := map[string]string{}
	var children []*child
	for i, n := range nodes {
		// Half the nodes prefer the first aggregator, half the second.
		first, second := aggs[0].addr, aggs[1].addr
		if i%2 == 1 {
			first, second = lossy, aggs[0].addr
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
  aggregator: "https://%s"
  failover: ["https://%s"]
  token_file: %q
  ca_file: %q
  spool: {dir: %q}
  interval: 200ms
`, n, freePort(t, "127.0.0.1"), admins[n], be, first, second, tokenFile, certFile, filepath.Join(dir, n+"-spool"))
		children = append(children, serveChild(t, writeConfig(t, yaml)))
	}
	type shipStats struct {
		BatchesAcked uint64 `json:"batches_acked"`
		RecordsAcked struct {
			Samples uint64 `json:"samples"`
		} `json:"records_acked"`
		SpooledBatches int `json:"spooled_batches"`
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
	var stored uint64
	for _, a := range aggs {
		eventually(t, "aggregator "+a.addr+" to export everything it stored", func() bool {
			return exportCaughtUp(client, "https://"+a.addr+"/metrics").After(restarted)
		})
		var fleet struct{ Batches uint64 }
		resp, err := client.Get("https://" + a.addr + "/v1/fleet")
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(resp.Body).Decode(&fleet)
		resp.Body.Close()
		stored += fleet.Batches
	}

	var ackedBatches, ackedSamples uint64
	for _, n := range nodes {
		ackedBatches += acked[n].BatchesAcked
		ackedSamples += acked[n].RecordsAcked.Samples
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
	t.Logf("nodes acknowledged %d batches of %d samples; the two aggregators stored %d batches (a difference is batches both stored, which victoria-metrics kept once)", ackedBatches, ackedSamples, stored)
	if stored <= ackedBatches {
		t.Errorf("the aggregators stored %d batches, the nodes acknowledged %d: the proxy should have made some be stored twice", stored, ackedBatches)
	}
	if stored < ackedBatches {
		t.Errorf("the aggregators stored %d batches, fewer than the %d the nodes had acknowledged", stored, ackedBatches)
	}
}

// answerLosingProxy forwards TCP to target. Its first lossy connections
// pass the server's first flight (the TLS handshake) and then lose every
// byte the server sends, and are closed after three seconds: the server
// receives and stores the batch, the node never hears so and fails over.
func answerLosingProxy(t *testing.T, target string, lossy int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn, lose bool) {
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				if !lose {
					io.Copy(c, up)
					return
				}
				time.AfterFunc(3*time.Second, func() { c.Close(); up.Close() })
				buf := make([]byte, 64<<10)
				if n, err := up.Read(buf); err == nil {
					c.Write(buf[:n])
				}
				io.Copy(io.Discard, up)
			}(c, n < lossy)
		}
	}()
	return ln.Addr().String()
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
