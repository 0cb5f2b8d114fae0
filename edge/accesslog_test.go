package edge

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	old, cur := lines(rotated), lines(path)
	if len(old) != 1 || len(cur) != 1 {
		t.Fatalf("want one line in each file, got %d and %d", len(old), len(cur))
	}
	if r := cur[0]; r["user_agent"] != "rotate-test/1" || r["request_bytes"] != 5.0 || r["msg"] != "access" {
		t.Fatalf("record lacks user agent or request size: %v", r)
	}
}
