//go:build !linux

package actuator

import (
	"os/exec"
	"syscall"
)

// sysProcAttr puts the child in its own process group; without Linux's
// parent-death signal, a node killed by SIGKILL leaves its replicas.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func start(cmd *exec.Cmd) error { return cmd.Start() }
