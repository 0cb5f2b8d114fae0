// Package vmtest starts Debian's victoria-metrics on loopback for tests
// that export into it, and queries it.
package vmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"perigee/servertest"
)

// Start runs victoria-metrics with a scratch store, deduplicating samples of
// one series and millisecond (as the export relies on), and returns its
// address once it is healthy. It skips the test when the binary is missing.
func Start(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("victoria-metrics")
	if err != nil {
		t.Skip("victoria-metrics not installed (Debian package victoria-metrics; .ci/run installs it)")
	}
	var data string
	return servertest.Start(t, "victoria-metrics", func(addr string) *exec.Cmd {
		data = filepath.Join(t.TempDir(), "vm")
		return exec.Command(bin, "-storageDataPath="+data, "-httpListenAddr="+addr,
			"-dedup.minScrapeInterval=1ms", "-search.latencyOffset=0s", "-loggerLevel=ERROR")
	}, func(addr string) bool {
		return serves(addr, fmt.Sprintf(`flag{name="storageDataPath", value=%q`, data))
	})
}

// serves reports whether the victoria-metrics at addr is healthy and its
// metrics carry mark.
func serves(addr, mark string) bool {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return err == nil && resp.StatusCode == http.StatusOK && strings.Contains(string(b), mark)
}

// Query runs an instant query after a flush and returns its single value,
// or what went wrong.
func Query(addr, q string) string {
	if resp, err := http.Get("http://" + addr + "/internal/force_flush"); err == nil {
		resp.Body.Close()
	}
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || len(r.Data.Result) != 1 {
		return fmt.Sprintf("no single result (%v)", err)
	}
	return fmt.Sprint(r.Data.Result[0].Value[1])
}

// Expect waits up to 30 s for each query to give its value (the remote
// write lands asynchronously) and reports every one that does not.
func Expect(t *testing.T, addr string, want map[string]string) {
	t.Helper()
	for q, w := range want {
		var got string
		deadline := time.Now().Add(30 * time.Second)
		for got = Query(addr, q); got != w && time.Now().Before(deadline); got = Query(addr, q) {
			time.Sleep(200 * time.Millisecond)
		}
		if got != w {
			t.Errorf("%s = %q, want %q", q, got, w)
		}
	}
}
