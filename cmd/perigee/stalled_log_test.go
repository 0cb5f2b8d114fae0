package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A real `perigee serve` whose stderr is a pipe nobody reads (a stalled
// docker logs driver, journald pushing back, `perigee serve | less`
// paused) keeps answering: every 502 from its dead backend is an access
// record in its log, which used to fill the 64 KiB pipe and hang every
// request that logged. It counts what it dropped, and exits on SIGTERM
// within its bound though the pipe is still full.
func TestServeWithStalledStderrKeepsAnswering(t *testing.T) {
	cmd, r, http1, admin := serveLoggingToPipe(t)
	defer r.Close() // never read until the end
	client := &http.Client{Timeout: 10 * time.Second}
	pad := strings.Repeat("p", 3000)
	for i := range 800 { // 800 records of 3 KB: past the pipe and the 1 MiB buffer
		if got := status(client, "http://"+http1+"/"+pad+"?i="+fmt.Sprint(i)); got != 502 {
			t.Fatalf("request %d with the log's reader stalled: status %d (0: no answer within 10s)", i, got)
		}
	}
	resp, err := client.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `perigee_log_dropped_total{log="node"}`) || strings.Contains(string(b), `perigee_log_dropped_total{log="node"} 0`) {
		t.Fatalf("no dropped lines counted:\n%s", grepLines(string(b), "perigee_log_dropped"))
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM with the log stalled: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30s after SIGTERM: shutdown waited on the stalled log")
	}
}

// A stderr whose reader goes away (a log shipper that crashed, a pager
// quit) does not kill the node: Go exits on a broken pipe at fd 2 unless
// told otherwise, which made a log reader's exit a node outage. The node
// answers on and counts the lines it could not write.
func TestServeOutlivesItsLogReader(t *testing.T) {
	_, r, http1, admin := serveLoggingToPipe(t)
	client := &http.Client{Timeout: 10 * time.Second}
	r.Close() // the reader is gone
	for i := range 50 {
		if got := status(client, "http://"+http1+"/?i="+fmt.Sprint(i)); got != 502 {
			t.Fatalf("request %d after the log's reader went away: status %d (0: no answer)", i, got)
		}
	}
	eventually(t, "the lost lines counted", func() bool {
		resp, err := client.Get("http://" + admin + "/metrics")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(b), `perigee_log_dropped_total{log="node"}`) && !strings.Contains(string(b), `perigee_log_dropped_total{log="node"} 0`)
	})
}

// serveLoggingToPipe runs `perigee serve` with its log on a pipe whose
// read end it returns, in front of a backend that is not there (every
// request a 502, and so an access record), once it serves.
func serveLoggingToPipe(t *testing.T) (cmd *exec.Cmd, r *os.File, http1, admin string) {
	t.Helper()
	http1, admin, dead := "127.0.0.1:"+freePort(t, "127.0.0.1"), "127.0.0.1:"+freePort(t, "127.0.0.1"), "127.0.0.2:"+freePort(t, "127.0.0.2")
	path := writeConfig(t, fmt.Sprintf(`listen: {http: %q, admin: %q}
services:
  api: {backends: [{url: "http://%s"}]}
routes:
  - {match: {path_prefix: /}, service: api}
`, http1, admin, dead))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(bin, "serve", "--config", path, "--log-format", "json")
	cmd.Stdout, cmd.Stderr = io.Discard, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	client := &http.Client{Timeout: 10 * time.Second}
	eventually(t, "serving", func() bool { return status(client, "http://"+http1+"/") == 502 })
	return cmd, r, http1, admin
}

func grepLines(s, sub string) string {
	var out []string
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}
