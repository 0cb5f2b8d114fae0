package actuator

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// waitDelay bounds how long Wait waits, once a child has exited, for the
// output pipes that a process it forked may still hold.
const waitDelay = time.Second

// command prepares argv as a child of its own process group, tied to the
// node's life where the platform allows it: stopping it signals the whole
// group, so a wrapper script's children stop too, and every Wait is
// bounded.
func command(argv []string) *exec.Cmd {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = waitDelay
	return cmd
}

// signalGroup sends sig to every process of cmd's group; a group already
// gone is not an error.
func signalGroup(cmd *exec.Cmd, sig syscall.Signal) error {
	if cmd.Process == nil {
		return nil
	}
	if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// run starts cmd and waits for it; when ctx ends first, its process group
// is killed.
func run(ctx context.Context, cmd *exec.Cmd) error {
	if err := start(cmd); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = signalGroup(cmd, syscall.SIGKILL) })
	defer stop()
	err := cmd.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// groupLeft says whether any process of cmd's group is still there.
func groupLeft(cmd *exec.Cmd) bool {
	return cmd.Process != nil && syscall.Kill(-cmd.Process.Pid, 0) == nil
}
