package actuator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"time"
)

// ExecSpec describes a command run on every scale.
type ExecSpec struct {
	// Command runs with PERIGEE_SERVICE, PERIGEE_REPLICAS, PERIGEE_REASON
	// and PERIGEE_TERM (the leadership term, never lower than one a
	// previous call carried from the same leader) in its environment; a
	// non-zero exit fails the scale.
	Command string
	Timeout time.Duration // default 30s
}

// Exec runs a command to scale, for platforms with a CLI of their own.
type Exec struct {
	service  string
	spec     ExecSpec
	argv     []string
	log      *slog.Logger
	replicas atomic.Int64
}

// NewExec checks the command line.
func NewExec(service string, spec ExecSpec, log *slog.Logger) (*Exec, error) {
	argv, err := splitCommand(spec.Command)
	if err != nil {
		return nil, fmt.Errorf("exec actuator %s: %w", service, err)
	}
	if spec.Timeout == 0 {
		spec.Timeout = 30 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Exec{service: service, spec: spec, argv: argv, log: log.With("service", service, "actuator", "exec")}, nil
}

// Scale runs the command and waits for it.
func (x *Exec) Scale(ctx context.Context, r Request) error {
	ctx, cancel := context.WithTimeout(ctx, x.spec.Timeout)
	defer cancel()
	cmd := command(x.argv)
	cmd.Env = append(os.Environ(), "PERIGEE_SERVICE="+x.service,
		"PERIGEE_REPLICAS="+strconv.Itoa(r.Replicas), "PERIGEE_REASON="+r.Reason,
		"PERIGEE_TERM="+strconv.FormatUint(r.Term, 10))
	out := &tail{}
	cmd.Stdout, cmd.Stderr = out, out
	err := run(ctx, cmd)
	if errors.Is(err, exec.ErrWaitDelay) && ctx.Err() == nil && cmd.ProcessState.Success() {
		// It exited 0; what it left running holds its output, and is its own.
		x.log.Warn("the command exited, leaving a process that holds its output", "command", x.argv[0])
		err = nil
	}
	if err != nil {
		return fmt.Errorf("exec actuator %s: %s: %w: %s", x.service, x.argv[0], err, out.String())
	}
	x.replicas.Store(int64(r.Replicas))
	x.log.Info("scaled", "replicas", r.Replicas, "reason", r.Reason, "term", r.Term)
	return nil
}

// Replicas is the count the command last set successfully.
func (x *Exec) Replicas() int { return int(x.replicas.Load()) }

// Close has nothing to release.
func (x *Exec) Close(context.Context) error { return nil }
