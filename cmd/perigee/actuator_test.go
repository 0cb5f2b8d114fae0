package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A process-scaled service whose instance command is a wrapper script
// that forks (a sleeper and the backend itself, both holding the output
// pipe): SIGTERM to the node ends it within its drain bound, and no
// process of the instance's group survives.
func TestNodeSIGTERMStopsAWrapperScriptInstance(t *testing.T) {
	https, admin := "127.0.0.1:"+freePort(t, "127.0.0.1"), "127.0.0.1:"+freePort(t, "127.0.0.1")
	pidFile := filepath.Join(t.TempDir(), "pgid")
	wrapper := fmt.Sprintf(`sh -c "echo \$\$ > %s; sleep 1000 & {self} sample-backend --listen \$1 & wait" sh {addr}`, pidFile)
	path := writeConfig(t, fmt.Sprintf(`listen: {https: %q, admin: %q}
timeouts: {drain: 2s}
services:
  api:
    scale: {actuator: process, command: %q, health_path: /healthz, min: 1, max: 1}
routes:
  - {match: {path_prefix: /}, service: api}
`, https, admin, wrapper))
	c := serveChild(t, path)
	h2 := insecureClient(false)
	eventually(t, "the wrapped instance serving", func() bool { return status(h2, "https://"+https+"/") == 200 })
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pgid <= 1 {
		t.Fatalf("pgid %q: %v", b, err)
	}
	defer syscall.Kill(-pgid, syscall.SIGKILL)

	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	// Drain 2s and the instance's stop timeout 10s, and slack for two
	// loaded cores: the bound catches a node that never exits, not a slow one.
	const bound = time.Minute
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, c.out)
		}
	case <-time.After(bound):
		t.Fatalf("no exit %v after SIGTERM:\n%s", bound, c.out)
	}
	deadline := time.Now().Add(bound)
	for syscall.Kill(-pgid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if syscall.Kill(-pgid, 0) == nil {
		t.Fatalf("a process of the instance's group %d survived the node", pgid)
	}
}
