// Package servertest runs another program's server on loopback for a test:
// Debian's victoria-metrics, prometheus and the like, which cannot bind
// port 0 and say which port they got.
package servertest

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Start runs the server command builds for a loopback address and returns
// that address once ours says the server answering there is the one it
// started (healthy is not enough: on a port it could not bind, another
// process's may answer). A port found free may be taken by another process
// first; the server then exits, and is started again on another, up to ten
// times. The server is killed when the test ends.
func Start(t *testing.T, name string, command func(addr string) *exec.Cmd, ours func(addr string) bool) string {
	t.Helper()
	for range 10 {
		if addr, ok := start(t, name, command, ours); ok {
			return addr
		}
	}
	t.Fatalf("%s did not start on any of ten free ports", name)
	return ""
}

// start runs the server once and reports false if it exited before it
// served.
func start(t *testing.T, name string, command func(string) *exec.Cmd, ours func(string) bool) (string, bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := command(addr)
	if testing.Verbose() {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			return "", false
		default:
		}
		if ours(addr) {
			return addr, true
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not become ready in a minute", name)
		}
	}
}
