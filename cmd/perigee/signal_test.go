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
// allows; an operator who sends SIGTERM or SIGINT again (Ctrl-C twice)
// wants the node gone now. The node ignored every signal once it had begun
// draining, and so held on for the whole drain. The other signal of the
// two is no repeat (a terminal's SIGINT and a supervisor's SIGTERM reach
// a node together): it is logged, and the drain goes on.
func TestSecondSignalCutsTheDrainShort(t *testing.T) {
	for _, signals := range [][]syscall.Signal{
		{syscall.SIGTERM, syscall.SIGTERM},
		{syscall.SIGINT, syscall.SIGINT},
		{syscall.SIGINT, syscall.SIGTERM, syscall.SIGINT},
	} {
		t.Run(fmt.Sprint(signals), func(t *testing.T) {
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
			first, last := signals[0], signals[len(signals)-1]
			c.cmd.Process.Signal(first)
			eventually(t, "the drain begun", func() bool { return strings.Contains(c.out.String(), "draining requests in flight") })
			for _, other := range signals[1 : len(signals)-1] {
				c.cmd.Process.Signal(other)
				eventually(t, "the other signal logged", func() bool { return strings.Contains(c.out.String(), "draining on") })
			}
			c.cmd.Process.Signal(last)
			done := make(chan error, 1)
			go func() { done <- c.cmd.Wait() }()
			const bound = time.Minute // far below the 10m drain: catches a node that waits it out
			select {
			case <-done:
			case <-time.After(bound):
				c.cmd.Process.Kill()
				<-done
				t.Fatalf("no exit %v after a second %v during a 10m drain:\n%s", bound, last, c.out)
			}
			if want := fmt.Sprintf(`"msg":"second signal: stopping at once, requests still in flight are cut","signal":%q`, last.String()); strings.Count(c.out.String(), want) != 1 {
				t.Fatalf("want one line %s:\n%s", want, c.out)
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
