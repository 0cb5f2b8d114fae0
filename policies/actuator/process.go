package actuator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProcessSpec describes the local instances of a service.
type ProcessSpec struct {
	// Command is the instance's command line; {addr} and {port} are
	// replaced by the address it must listen on. The instance also gets
	// PORT, ADDR and PERIGEE_SERVICE in its environment.
	Command string
	Min     int
	Max     int // 0 means no upper bound
	// HealthPath is polled until the instance answers below 500; "/" when
	// empty.
	HealthPath   string
	StartTimeout time.Duration // to become healthy; default 30s
	StopTimeout  time.Duration // between SIGTERM and SIGKILL; default 10s
}

// Process supervises N local instances of a command: each gets its own
// port, is health-checked before it is registered as a backend, is
// restarted if it dies, and is deregistered before it is stopped.
type Process struct {
	service string
	spec    ProcessSpec
	argv    []string
	reg     Registry
	log     *slog.Logger
	client  *http.Client
	closing chan struct{} // closed by Close: instances still starting give up
	drained chan struct{} // closed once Close's context ends: every stop still waiting kills

	// scaling holds one token: one Scale (or replacement) at a time, and a
	// channel so that a Scale waiting its turn gives up with its context.
	scaling chan struct{}
	desired int

	mu        sync.Mutex
	instances []*instance // ready ones, oldest first
	closed    bool
	wg        sync.WaitGroup // watchers and instances still starting
}

type instance struct {
	addr    string
	url     string
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool // set under Process.mu when we stop it on purpose
}

// NewProcess checks the spec; it starts nothing until Scale.
func NewProcess(service string, spec ProcessSpec, reg Registry, log *slog.Logger) (*Process, error) {
	argv, err := splitCommand(spec.Command)
	if err != nil {
		return nil, fmt.Errorf("process actuator %s: %w", service, err)
	}
	if !strings.Contains(spec.Command, "{addr}") && !strings.Contains(spec.Command, "{port}") {
		return nil, fmt.Errorf("process actuator %s: command must contain {addr} or {port}", service)
	}
	if spec.Min < 0 || (spec.Max != 0 && spec.Max < spec.Min) {
		return nil, fmt.Errorf("process actuator %s: bad bounds min %d max %d", service, spec.Min, spec.Max)
	}
	if reg == nil {
		return nil, fmt.Errorf("process actuator %s: no backend registry", service)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if spec.HealthPath == "" {
		spec.HealthPath = "/"
	}
	if spec.StartTimeout == 0 {
		spec.StartTimeout = 30 * time.Second
	}
	if spec.StopTimeout == 0 {
		spec.StopTimeout = 10 * time.Second
	}
	return &Process{
		service: service, spec: spec, argv: argv, reg: reg,
		log:     log.With("service", service, "actuator", "process"),
		client:  &http.Client{Timeout: 2 * time.Second},
		closing: make(chan struct{}),
		drained: make(chan struct{}),
		scaling: make(chan struct{}, 1),
	}, nil
}

// Replicas is the number of healthy, registered instances.
func (p *Process) Replicas() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.instances)
}

// Scale starts or stops instances until replicas are running and
// registered. Its instances are this node's own, so the term is only
// logged.
func (p *Process) Scale(ctx context.Context, r Request) error {
	replicas, reason := r.Replicas, r.Reason
	if r.Term != 0 {
		reason = fmt.Sprintf("%s (term %d)", reason, r.Term)
	}
	if replicas < p.spec.Min || (p.spec.Max != 0 && replicas > p.spec.Max) {
		return fmt.Errorf("process actuator %s: %d replicas outside [%d, %d]", p.service, replicas, p.spec.Min, p.spec.Max)
	}
	select {
	case p.scaling <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("process actuator %s: waiting for another scale: %w", p.service, ctx.Err())
	}
	defer func() { <-p.scaling }()
	p.desired = replicas
	return p.converge(ctx, reason)
}

func (p *Process) converge(ctx context.Context, reason string) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fmt.Errorf("process actuator %s: closed", p.service)
	}
	have := len(p.instances)
	var victims []*instance
	if have > p.desired {
		victims = append(victims, p.instances[p.desired:]...)
		p.instances = p.instances[:p.desired]
		for _, in := range victims {
			in.stopped = true
		}
	}
	// Close waits for the instances still starting, and bounds their stop.
	p.wg.Add(max(p.desired-have, 0))
	p.mu.Unlock()
	if len(victims) > 0 {
		p.log.Info("scaling down", "from", have, "to", p.desired, "reason", reason)
		return p.stopAll(ctx, victims)
	}
	if have == p.desired {
		return nil
	}
	p.log.Info("scaling up", "from", have, "to", p.desired, "reason", reason)
	errs := make([]error, p.desired-have)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			defer p.wg.Done()
			errs[i] = p.startOne(ctx)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// startOne starts an instance, waits for it to answer and registers it.
func (p *Process) startOne(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return fmt.Errorf("process actuator %s: %w", p.service, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	argv := make([]string, len(p.argv))
	for i, a := range p.argv {
		argv[i] = strings.NewReplacer("{addr}", addr, "{port}", strconv.Itoa(port)).Replace(a)
	}
	// Its own process group, so a terminal's Ctrl-C reaches the node,
	// which then stops its children in order, and a stop reaches whatever
	// the command forked.
	cmd := command(argv)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "ADDR="+addr, "PERIGEE_SERVICE="+p.service)
	out := newLineLog(p.log.With("instance", addr))
	cmd.Stdout, cmd.Stderr = out, out
	if err := start(cmd); err != nil {
		return fmt.Errorf("process actuator %s: start %s: %w", p.service, argv[0], err)
	}
	in := &instance{addr: addr, url: "http://" + addr, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(in.exited)
	}()
	// An instance that fails from here is stopped within ctx (and Close's),
	// so a child ignoring SIGTERM holds no caller past its deadline.
	if err := p.awaitHealthy(ctx, in); err != nil {
		p.stop(ctx, in)
		return fmt.Errorf("process actuator %s: instance %s: %w", p.service, addr, err)
	}
	if err := p.reg.AddBackend(p.service, in.url); err != nil {
		p.stop(ctx, in)
		return fmt.Errorf("process actuator %s: register %s: %w", p.service, in.url, err)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = p.reg.RemoveBackend(p.service, in.url)
		p.stop(ctx, in)
		return fmt.Errorf("process actuator %s: closed while starting", p.service)
	}
	p.instances = append(p.instances, in)
	p.mu.Unlock()
	p.wg.Go(func() { p.watch(in) })
	p.log.Info("instance ready", "instance", addr, "pid", cmd.Process.Pid)
	return nil
}

func (p *Process) awaitHealthy(ctx context.Context, in *instance) error {
	ctx, cancel := context.WithTimeout(ctx, p.spec.StartTimeout)
	defer cancel()
	delay := 10 * time.Millisecond
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, in.url+p.spec.HealthPath, nil)
		if err != nil {
			return err
		}
		if resp, err := p.client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
		}
		select {
		case <-in.exited:
			return fmt.Errorf("exited before becoming healthy: %v", in.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("not healthy after %v: %w", p.spec.StartTimeout, ctx.Err())
		case <-p.closing:
			return errors.New("closed while starting")
		case <-time.After(delay):
			delay = min(delay*2, 500*time.Millisecond)
		}
	}
}

// watch deregisters an instance that dies on its own, stops what is left
// of its process group (a wrapper's server, or a daemon the command forked)
// and starts a replacement.
func (p *Process) watch(in *instance) {
	<-in.exited
	p.mu.Lock()
	if in.stopped || p.closed {
		p.mu.Unlock()
		return
	}
	for i, x := range p.instances {
		if x == in {
			p.instances = append(p.instances[:i], p.instances[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
	p.log.Error("instance exited; replacing it", "instance", in.addr, "state", in.cmd.ProcessState.String())
	if err := p.reg.RemoveBackend(p.service, in.url); err != nil {
		p.log.Warn("deregister failed", "instance", in.addr, "err", err)
	}
	p.stop(context.Background(), in)
	select {
	case <-p.closing:
		return
	case <-time.After(time.Second): // do not spin on a command that dies at once
	}
	select {
	case p.scaling <- struct{}{}:
	case <-p.closing:
		return
	}
	defer func() { <-p.scaling }()
	if err := p.converge(context.Background(), "replace exited instance"); err != nil {
		p.log.Error("replacing instance failed", "err", err)
	}
}

func (p *Process) stopAll(ctx context.Context, list []*instance) error {
	var errs []error
	for _, in := range list {
		if err := p.reg.RemoveBackend(p.service, in.url); err != nil {
			errs = append(errs, fmt.Errorf("process actuator %s: deregister %s: %w", p.service, in.url, err))
		}
	}
	var wg sync.WaitGroup
	for _, in := range list {
		wg.Go(func() { p.stop(ctx, in) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stop asks an instance's process group to finish with SIGTERM, waits for
// every process of it (a wrapper script's children too) until the stop
// timeout, ctx or Close's context ends, then kills what is left of the
// group. It returns within the first of those plus waitDelay.
func (p *Process) stop(ctx context.Context, in *instance) {
	p.mu.Lock()
	in.stopped = true
	p.mu.Unlock()
	_ = signalGroup(in.cmd, syscall.SIGTERM)
	timeout := time.NewTimer(p.spec.StopTimeout)
	defer timeout.Stop()
	// until waits for done, and says false if time ran out first.
	until := func(done <-chan struct{}) bool {
		select {
		case <-done:
			return true
		case <-timeout.C:
			p.log.Warn("instance ignored SIGTERM; killing its process group", "instance", in.addr)
		case <-ctx.Done():
			p.log.Warn("no time left to stop gracefully; killing its process group", "instance", in.addr)
		case <-p.drained:
			p.log.Warn("node drain deadline passed; killing its process group", "instance", in.addr)
		}
		return false
	}
	if until(in.exited) {
		for groupLeft(in.cmd) && until(pause(50*time.Millisecond)) {
		}
	}
	_ = signalGroup(in.cmd, syscall.SIGKILL)
	<-in.exited // bounded: the group is dead, and Wait gives up on pipes after waitDelay
}

// pause is a channel closed after d.
func pause(d time.Duration) <-chan struct{} {
	c := make(chan struct{})
	time.AfterFunc(d, func() { close(c) })
	return c
}

// Close stops every instance.
func (p *Process) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.closing)
	context.AfterFunc(ctx, func() { close(p.drained) })
	victims := p.instances
	p.instances = nil
	for _, in := range victims {
		in.stopped = true
	}
	p.mu.Unlock()
	err := p.stopAll(ctx, victims)
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("process actuator %s: close: %w", p.service, ctx.Err())
	}
	if err == nil && ctx.Err() != nil {
		return fmt.Errorf("process actuator %s: close: instances killed: %w", p.service, ctx.Err())
	}
	return err
}

// freePort asks the kernel for a free port. Another program could take it
// before the instance binds it; the health check then fails and the scale
// reports it.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("allocate port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
