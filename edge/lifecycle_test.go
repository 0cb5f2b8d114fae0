package edge

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"perigee/edge/config"
)

// freePort is a loopback address nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// mustBind proves nothing else holds addr, and lets it go again.
func mustBind(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s is held: %v", addr, err)
	}
	ln.Close()
}

func lifecycleConfig(t *testing.T, https, admin string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node.yaml")
	writeFile(t, path, fmt.Sprintf(`listen: {https: %q, admin: %q}
access_log: {enabled: false}
services:
  api:
    backends: [{url: %q}]
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`, https, admin, backend(t, "a")))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestNewOpensNothingAndStartOpens(t *testing.T) {
	https, adminAddr := freePort(t), freePort(t)
	n, err := New(lifecycleConfig(t, https, adminAddr), Options{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	mustBind(t, https)
	mustBind(t, adminAddr)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, h1Client(), "https://"+https+"/"); resp.StatusCode != 200 || !contains(body, "a") {
		t.Fatalf("after Start: %d %q", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	mustBind(t, https)
	mustBind(t, adminAddr)
}

// A part that fails to open stops the ones opened before it.
func TestFailedStartClosesWhatItOpened(t *testing.T) {
	https := freePort(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	n, err := New(lifecycleConfig(t, https, taken.Addr().String()), Options{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err == nil || !strings.Contains(err.Error(), "listen.admin") {
		t.Fatalf("Start with the admin port taken: %v", err)
	}
	mustBind(t, https)
}
