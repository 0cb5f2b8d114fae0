package edge

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A client of the admin API that asks for answers and never reads them
// holds a connection only while its answers keep moving: a write that
// waits past timeouts.idle fails and the connection goes, so such clients
// cannot keep the listener's slots (here its only one) from the operator.
// An answer long in coming is not cut: a CPU profile longer than the bound
// still arrives whole.
func TestAdminAnswersAClientDoesNotTakeAreCut(t *testing.T) {
	n := startNode(t, "timeouts: {idle: 1s}\nlimits: {connections: {max_total: 1, max_per_address: 1}}\n"+nodeYAML("round_robin", backend(t, "b1")))
	addr := n.Addrs().Admin
	stall, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stall.Close()
	// Pipelined requests whose answers fill both sides' socket buffers,
	// whatever their size; none of them is read.
	if _, err := io.WriteString(stall, strings.Repeat("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 2000)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stalled connection held", func() bool { return open(n, "admin") == 1 })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = io.WriteString(c, "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
			b, _ := io.ReadAll(c)
			c.Close()
			if strings.HasPrefix(string(b), "HTTP/1.1 200") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin listener's one slot stayed held by a client that reads nothing (%d open)", open(n, "admin"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, "the slot freed", func() bool { return open(n, "admin") == 0 })
	resp, err := http.Get("http://" + addr + "/debug/pprof/profile?seconds=2")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	prof, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || err != nil || len(prof) == 0 {
		t.Fatalf("a 2s profile under a 1s bound: %s, %d bytes, %v", resp.Status, len(prof), err)
	}
}
