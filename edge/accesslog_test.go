package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"perigee/memtest"
)

// The access log goes to its own file, with the client's user agent and
// the request's size; after logrotate moves the file away, ReopenLogs (what
// SIGUSR1 does) starts a new one at the path and the moved one gets no more.
func TestAccessLogFileReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	n := startNode(t, strings.Replace(nodeYAML("round_robin", backend(t, "a")), "access_log: {enabled: false}", "access_log: {file: "+path+"}", 1))
	send := func() {
		req, _ := http.NewRequest("POST", "http://"+n.Addrs().HTTP+"/x", strings.NewReader("hello"))
		req.Header.Set("User-Agent", "rotate-test/1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	lines := func(p string) []map[string]any {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var out []map[string]any
		for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			var m map[string]any
			if err := json.Unmarshal(l, &m); err != nil {
				t.Fatalf("%s: %q: %v", p, l, err)
			}
			out = append(out, m)
		}
		return out
	}
	send()
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := n.ReopenLogs(); err != nil {
		t.Fatal(err)
	}
	send()
	// Records are written behind the request; ReopenLogs wrote the first.
	waitFor(t, "the second record", func() bool { b, _ := os.ReadFile(path); return len(b) > 0 && b[len(b)-1] == '\n' })
	old, cur := lines(rotated), lines(path)
	if len(old) != 1 || len(cur) != 1 {
		t.Fatalf("want one line in each file, got %d and %d", len(old), len(cur))
	}
	if r := cur[0]; r["user_agent"] != "rotate-test/1" || r["request_bytes"] != 5.0 || r["msg"] != "access" {
		t.Fatalf("record lacks user agent or request size: %v", r)
	}
}

// accessFIFO makes a FIFO for access_log.file and opens its read end
// without reading: the stalled log shipper. The reader closes before the
// node shuts down, so a node stuck writing to it is let go.
func accessFIFO(t *testing.T) (path string, reader *os.File) {
	path = filepath.Join(t.TempDir(), "access.fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	return path, r
}

// A reader that stops reading the access log (a hung log shipper on a
// FIFO) must not stop the node: every 5xx is logged, so a client that can
// reach a dead backend could otherwise fill the pipe and hang every
// request that logs. Records past the bounded buffer are dropped and
// counted, memory stays bounded, and when the reader comes back the log
// goes on with whole lines and one line saying how many were dropped.
func TestStalledAccessLogDoesNotStopTheNode(t *testing.T) {
	path, r := accessFIFO(t)
	n := startNode(t, strings.Replace(nodeYAML("round_robin", deadAddr(t)), "access_log: {enabled: false}", "access_log: {file: "+path+"}", 1))
	t.Cleanup(func() { r.Close() })
	client := &http.Client{Timeout: 10 * time.Second}
	pad := strings.Repeat("p", 3000) // a longer record, so fewer requests fill memory
	send := func(count int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, count)
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < count; i += 4 {
					resp, err := client.Get("http://" + n.Addrs().HTTP + "/dead/" + pad + "?i=" + strconv.Itoa(i))
					if err != nil {
						errs <- fmt.Errorf("request %d got no answer: %w", i, err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusBadGateway {
						errs <- fmt.Errorf("request %d: status %d, want 502", i, resp.StatusCode)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	send(500) // well past the 64 KiB a pipe holds
	before := memtest.LiveHeap()
	send(3000)
	grew := memtest.LiveHeap() - before
	t.Logf("heap in use grew by %d KiB over 3000 logged requests while the access log was stalled", grew>>10)
	if grew > 4<<20 { // the 1 MiB buffer and slack; unbounded, 3000 records of 3.6 KB would be 10.8 MB
		t.Fatalf("the heap grew by %d bytes while the access log was stalled", grew)
	}
	_, metrics := get(t, http.DefaultClient, "http://"+n.Addrs().Admin+"/metrics")
	if !strings.Contains(metrics, `perigee_log_dropped_total{log="access"}`) || strings.Contains(metrics, `perigee_log_dropped_total{log="access"} 0`) {
		t.Fatalf("no dropped access records counted:\n%s", grepLines(metrics, "perigee_log_dropped"))
	}

	// The shipper reads again: what was buffered comes out whole, then the
	// count of what was dropped, then the next records.
	lines := make(chan []byte, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- bytes.Clone(sc.Bytes())
		}
	}()
	var got [][]byte
	deadline := time.After(30 * time.Second)
	for noticed, after := false, false; !after; {
		select {
		case l := <-lines:
			got = append(got, l)
			after = noticed
			noticed = noticed || bytes.Contains(l, []byte(`"dropped"`))
		case <-time.After(20 * time.Millisecond):
			send(1)
		case <-deadline:
			t.Fatalf("no record after the dropped count in %d lines read", len(got))
		}
	}
	var notices int
	for _, l := range got {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("a broken line in the access log: %q: %v", l, err)
		}
		if d, ok := m["dropped"].(float64); ok {
			notices++
			if d <= 0 || m["level"] != "WARN" {
				t.Fatalf("notice: %v", m)
			}
		}
	}
	if notices != 1 {
		t.Fatalf("%d notices of dropped records, want 1", notices)
	}
}

// An access_log.file that is a FIFO nobody reads must not hang the node's
// start in open(2): it is refused with an error naming the file.
func TestAccessLogFIFOWithoutReaderIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "node.yaml")
	writeFile(t, cfgPath, strings.Replace(nodeYAML("round_robin", deadAddr(t)), "access_log: {enabled: false}", "access_log: {file: "+path+"}", 1))
	done := make(chan error, 1)
	go func() {
		n, err := newFromFile(cfgPath)
		if err == nil {
			n.Shutdown(context.Background())
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "no reader") {
			t.Fatalf("want an error naming %s and its missing reader, got %v", path, err)
		}
	case <-time.After(20 * time.Second):
		// Let the stuck open go, so the test binary can end.
		if r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			defer r.Close()
		}
		t.Fatal("opening the node with a FIFO for its access log hung")
	}
}

// Rotating away from a stalled FIFO (SIGUSR1 after the operator moved it)
// takes a bounded time and gets the log going again in the new file: the
// write stuck on the old one is let go, not waited for.
func TestReopenLeavesAStalledFIFO(t *testing.T) {
	path, r := accessFIFO(t)
	n := startNode(t, strings.Replace(nodeYAML("round_robin", deadAddr(t)), "access_log: {enabled: false}", "access_log: {file: "+path+"}", 1))
	t.Cleanup(func() { r.Close() })
	pad := strings.Repeat("p", 3000)
	for i := range 100 { // 300 KB: past what the pipe holds
		if resp, _ := get(t, http.DefaultClient, "http://"+n.Addrs().HTTP+"/"+pad); resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	if err := os.Rename(path, path+".old"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.ReopenLogs() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ReopenLogs hung on the stalled FIFO")
	}
	waitFor(t, "a record in the new file", func() bool {
		get(t, http.DefaultClient, "http://"+n.Addrs().HTTP+"/after")
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), `"path":"/after"`)
	})
}
