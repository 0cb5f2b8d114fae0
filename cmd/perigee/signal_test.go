package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A drain waits for the requests in flight as long as timeouts.drain
// allows; an operator who sends a second SIGTERM or SIGINT (Ctrl-C twice)
// wants the node gone now. The node ignored every signal once it had begun
// draining, and so held on for the whole drain.
func TestSecondSignalCutsTheDrainShort(t *testing.T) {
	for _, second := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(second.String(), func(t *testing.T) {
			https, admin, be := "127.0.0.1:"+freePort(t, "127.0.0.1"), "127.0.0.1:"+freePort(t, "127.0.0.1"), "127.0.0.1:"+freePort(t, "127.0.0.1")
			path := writeConfig(t, fmt.Sprintf(`listen: {https: %q, admin: %q}
timeouts: {drain: 10m, response_header: 10m, upstream_read: 10m}
sample_backends: [{listen: %q, name: slow, latency: 10m}]
services:
  api: {backends: [{url: "http://%s"}]}
routes:
  - {match: {path_prefix: /}, service: api}
`, https, admin, be, be))
			c := serveChild(t, path)
			eventually(t, "the node listening", func() bool { return strings.Contains(c.out.String(), "serving with") })
			h2 := insecureClient(false)
			h2.Timeout = 0
			go status(h2, "https://"+https+"/") // in flight for the whole drain
			eventually(t, "the request at the backend", func() bool { return upstreamInFlight(admin) })
			c.cmd.Process.Signal(syscall.SIGTERM)
			eventually(t, "the drain begun", func() bool { return strings.Contains(c.out.String(), "draining requests in flight") })
			c.cmd.Process.Signal(second)
			done := make(chan error, 1)
			go func() { done <- c.cmd.Wait() }()
			const bound = time.Minute // far below the 10m drain: catches a node that waits it out
			select {
			case <-done:
			case <-time.After(bound):
				c.cmd.Process.Kill()
				<-done
				t.Fatalf("no exit %v after a second %v during a 10m drain:\n%s", bound, second, c.out)
			}
		})
	}
}

// upstreamInFlight says whether the node at admin has a request at a
// backend, by its metrics.
func upstreamInFlight(admin string) bool {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "perigee_upstream_in_flight{") && !strings.HasSuffix(line, " 0") {
			return true
		}
	}
	return false
}
