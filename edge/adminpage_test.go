package edge

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Headless Chromium renders the admin page from the node's own JSON: its
// name, its service's backends with their health, and its routes. A
// screenshot goes to $PERIGEE_SCREENSHOTS when set, for a person to look at.
func TestAdminPageInChromium(t *testing.T) {
	chromium := lookPath(t, "chromium", "chromium")
	n := startNode(t, nodeYAML("round_robin", backend(t, "a"), backend(t, "b")))
	url := "http://" + n.Addrs().Admin + "/"
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=3000"}
		out, err := exec.CommandContext(ctx, chromium, append(append(base, args...), url)...).Output()
		if err != nil {
			t.Fatalf("chromium: %v\n%s", err, out)
		}
		return string(out)
	}
	dom := run("--dump-dom")
	for _, want := range []string{"perigee local (local)", "req/s", "<td>api</td>", "<th>path prefix</th>", `class="up"`, "no decisions yet"} {
		if !strings.Contains(dom, want) {
			t.Errorf("page lacks %q:\n%s", want, dom)
		}
	}
	if strings.Contains(dom, `class="err"`) {
		t.Errorf("page could not read the node:\n%s", dom)
	}
	if dir := os.Getenv("PERIGEE_SCREENSHOTS"); dir != "" {
		shot := filepath.Join(dir, "admin.png")
		run("--screenshot="+shot, "--window-size=1200,700")
		if st, err := os.Stat(shot); err != nil || st.Size() == 0 {
			t.Fatalf("no screenshot: %v", err)
		}
	}
}
