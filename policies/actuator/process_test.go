package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"perigee/logtest"
)

// TestMain turns this test binary into a tiny HTTP backend when the
// process actuator starts it as a child.
func TestMain(m *testing.M) {
	switch os.Getenv("PERIGEE_TEST_CHILD") {
	case "stubborn": // a backend that ignores SIGTERM
		signal.Ignore(syscall.SIGTERM)
		fallthrough
	case "serve":
		serveHealth()
	case "exit":
		os.Exit(3)
	case "first-serves": // the first instance serves, every later one is deaf
		if f, err := os.OpenFile(os.Getenv("PERIGEE_TEST_MARK"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err == nil {
			f.Close()
			serveHealth()
		}
		fallthrough
	case "deaf": // never becomes healthy, ignores SIGTERM, says its pid
		signal.Ignore(syscall.SIGTERM)
		os.WriteFile(os.Getenv("PERIGEE_TEST_PIDFILE"), []byte(strconv.Itoa(os.Getpid())), 0o600)
		select {}
	case "parent":
		runParent()
	}
	os.Exit(m.Run())
}

// serveHealth answers /health on the address the child was given.
func serveHealth() {
	addr := os.Args[len(os.Args)-1]
	http.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	fmt.Println("child listening on", addr)
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// registry records the backends it is told about.
type registry struct {
	mu       sync.Mutex
	backends []string
}

func (r *registry) AddBackend(svc, url string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.backends = append(r.backends, url)
	return nil
}

func (r *registry) RemoveBackend(svc, url string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := slices.Index(r.backends, url)
	if i < 0 {
		return errors.New("unknown backend " + url)
	}
	r.backends = slices.Delete(r.backends, i, i+1)
	return nil
}

func (r *registry) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.backends)
}

func selfCommand(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("'%s' -test.run=^$ {addr}", exe)
}

func get(url string) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url + "/health")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func TestProcessScalesRealChildrenUpAndDown(t *testing.T) {
	t.Setenv("PERIGEE_TEST_CHILD", "serve")
	reg := &registry{}
	p, err := NewProcess("api", ProcessSpec{Command: selfCommand(t), Min: 0, Max: 4, HealthPath: "/health"}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	defer p.Close(ctx)
	if err := p.Scale(ctx, Request{Replicas: 3, Reason: "burst"}); err != nil {
		t.Fatal(err)
	}
	urls := reg.list()
	if p.Replicas() != 3 || len(urls) != 3 {
		t.Fatalf("replicas %d, registered %v", p.Replicas(), urls)
	}
	for _, u := range urls {
		if err := get(u); err != nil {
			t.Fatalf("registered backend %s does not answer: %v", u, err)
		}
	}
	if err := p.Scale(ctx, Request{Replicas: 1, Reason: "quiet"}); err != nil {
		t.Fatal(err)
	}
	left := reg.list()
	if p.Replicas() != 1 || len(left) != 1 || left[0] != urls[0] {
		t.Fatalf("after scale-down: replicas %d, registered %v", p.Replicas(), left)
	}
	for _, u := range urls[1:] {
		if get(u) == nil {
			t.Errorf("stopped backend %s still answers", u)
		}
	}
	if err := p.Scale(ctx, Request{Replicas: 5, Reason: "too many"}); err == nil {
		t.Error("scale above max accepted")
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if get(urls[0]) == nil || len(reg.list()) != 0 {
		t.Fatalf("Close left children running or registered: %v", reg.list())
	}
	if err := p.Scale(ctx, Request{Replicas: 1, Reason: "after close"}); err == nil {
		t.Error("scale after Close accepted")
	}
}

func TestProcessReplacesAChildThatDies(t *testing.T) {
	t.Setenv("PERIGEE_TEST_CHILD", "serve")
	reg := &registry{}
	p, err := NewProcess("api", ProcessSpec{Command: selfCommand(t), Max: 2, HealthPath: "/health"}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	defer p.Close(ctx)
	if err := p.Scale(ctx, Request{Replicas: 1, Reason: "start"}); err != nil {
		t.Fatal(err)
	}
	first := reg.list()[0]
	p.mu.Lock()
	victim := p.instances[0].cmd.Process
	p.mu.Unlock()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if l := reg.list(); len(l) == 1 && l[0] != first && p.Replicas() == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead child not replaced: %v", reg.list())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProcessReportsChildThatNeverBecomesHealthy(t *testing.T) {
	t.Setenv("PERIGEE_TEST_CHILD", "exit")
	reg := &registry{}
	p, err := NewProcess("api", ProcessSpec{Command: selfCommand(t), Max: 2}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	err = p.Scale(context.Background(), Request{Replicas: 1, Reason: "start"})
	if err == nil || p.Replicas() != 0 || len(reg.list()) != 0 {
		t.Fatalf("err %v, replicas %d, registered %v", err, p.Replicas(), reg.list())
	}
}

func TestNewProcessRejectsBadSpecs(t *testing.T) {
	for _, spec := range []ProcessSpec{
		{Command: ""},
		{Command: "server --port 80"},
		{Command: "'unterminated {addr}"},
		{Command: "x {addr}", Min: 3, Max: 2},
	} {
		if _, err := NewProcess("api", spec, &registry{}, nil); err == nil {
			t.Errorf("spec %+v accepted", spec)
		}
	}
	if _, err := NewProcess("api", ProcessSpec{Command: "x {addr}"}, nil, nil); err == nil {
		t.Error("nil registry accepted")
	}
}

func TestSplitCommand(t *testing.T) {
	got, err := splitCommand(`./bin/perigee sample-backend --listen {addr} --name "a b" 'c d' e\ f`)
	want := []string{"./bin/perigee", "sample-backend", "--listen", "{addr}", "--name", "a b", "c d", "e f"}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("got %q, %v", got, err)
	}
	for _, bad := range []string{"", "   ", `"open`, `trailing\`} {
		if _, err := splitCommand(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// alive says whether any process of the group pgid is left.
func groupAlive(pgid int) bool { return syscall.Kill(-pgid, 0) == nil }

// awaitGroupGone fails the test with why, killing the group, unless the
// group pgid is gone within bound.
func awaitGroupGone(t *testing.T, pgid int, bound time.Duration, why string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if groupAlive(pgid) {
		syscall.Kill(-pgid, syscall.SIGKILL)
		t.Fatal(why)
	}
}

// An instance whose command is a wrapper script that forks: the server and
// a sleeper are grandchildren holding the output pipe. Closing stops the
// whole group within its bound, and nothing of it keeps serving.
func TestWrapperScriptInstanceStopsWithItsGroup(t *testing.T) {
	t.Setenv("PERIGEE_TEST_CHILD", "serve")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := fmt.Sprintf(`sh -c "sleep 1000 & '%s' -test.run=^$ \$1 & wait" sh {addr}`, exe)
	reg := &registry{}
	p, err := NewProcess("api", ProcessSpec{Command: cmd, Max: 1, HealthPath: "/health", StopTimeout: time.Second}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Scale(context.Background(), Request{Replicas: 1, Reason: "start"}); err != nil {
		t.Fatal(err)
	}
	url := reg.list()[0]
	p.mu.Lock()
	pgid := p.instances[0].cmd.Process.Pid
	p.mu.Unlock()
	if err := get(url); err != nil {
		t.Fatal(err)
	}
	const bound = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- p.Close(ctx) }()
	select {
	case <-closed:
	case <-time.After(2 * bound):
		syscall.Kill(-pgid, syscall.SIGKILL)
		t.Fatalf("Close still running after %v", 2*bound)
	}
	awaitGroupGone(t, pgid, bound, "a process of the instance's group survived Close")
	if err := get(url); err == nil {
		t.Fatal("the grandchild still serves after Close")
	}
}

// Close gives up when its context ends, killing what is left rather than
// waiting for an instance that ignores SIGTERM.
func TestProcessCloseHonoursItsContext(t *testing.T) {
	t.Setenv("PERIGEE_TEST_CHILD", "stubborn")
	reg := &registry{}
	p, err := NewProcess("api", ProcessSpec{Command: selfCommand(t), Max: 1, HealthPath: "/health", StopTimeout: time.Hour}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Scale(context.Background(), Request{Replicas: 1, Reason: "start"}); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	pgid := p.instances[0].cmd.Process.Pid
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- p.Close(ctx) }()
	select {
	case err := <-closed:
		if err == nil {
			t.Error("Close reported success though it had to kill")
		}
	case <-time.After(10 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		t.Fatal("Close ignored its context")
	}
	awaitGroupGone(t, pgid, 5*time.Second, "the group survived a Close whose context ended")
}

// The node killed with SIGKILL takes its replicas with it: a parent
// process (this test binary again) starts a replica, the test kills the
// parent, and the replica must die too.
func TestReplicaDiesWithItsKilledParent(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux's")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	parent := exec.Command(exe, "-test.run=^$")
	parent.Env = append(os.Environ(), "PERIGEE_TEST_CHILD=parent")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	parent.Stderr = os.Stderr
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer parent.Process.Kill()
	var pid int
	if _, err := fmt.Fscanf(out, "replica %d\n", &pid); err != nil {
		t.Fatalf("parent did not report its replica: %v", err)
	}
	defer syscall.Kill(-pid, syscall.SIGKILL)
	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatalf("replica %d outlived its SIGKILLed parent", pid)
	}
}

// runParent is the parent process of TestReplicaDiesWithItsKilledParent:
// it starts one replica, says its pid and waits to be killed.
func runParent() {
	os.Setenv("PERIGEE_TEST_CHILD", "serve")
	exe, _ := os.Executable()
	p, err := NewProcess("api", ProcessSpec{Command: fmt.Sprintf("'%s' -test.run=^$ {addr}", exe), Max: 1, HealthPath: "/health"}, &registry{}, nil)
	if err == nil {
		// Start from a goroutine that then ends, as a scale worker would.
		done := make(chan error)
		go func() { done <- p.Scale(context.Background(), Request{Replicas: 1}) }()
		err = <-done
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	p.mu.Lock()
	fmt.Printf("replica %d\n", p.instances[0].cmd.Process.Pid)
	p.mu.Unlock()
	select {}
}

// An exec command that forks and outlives its timeout: the scale fails
// within the bound and nothing of its group lives on.
func TestExecTimeoutKillsTheCommandsGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pgid")
	x, err := NewExec("api", ExecSpec{Command: fmt.Sprintf(`sh -c 'echo $$ > %s; sleep 1000 & wait'`, pidFile), Timeout: 300 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- x.Scale(context.Background(), Request{Replicas: 2}) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a command past its timeout succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Scale still waiting 10s after a 300ms timeout")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pgid int
	if fmt.Sscan(string(b), &pgid); pgid <= 1 {
		t.Fatalf("pid file holds %q", b)
	}
	awaitGroupGone(t, pgid, 5*time.Second, fmt.Sprintf("the command's group %d survived its timeout", pgid))
}

// A wrapper that exits at once on SIGTERM while a child of it finishes in
// its own time: the child gets that time (up to the stop timeout) rather
// than being killed as soon as the wrapper is gone.
func TestWrapperChildFinishesGracefully(t *testing.T) {
	t.Setenv("PERIGEE_TEST_CHILD", "serve")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	finished := filepath.Join(t.TempDir(), "finished")
	cmd := fmt.Sprintf(`sh -c "sh -c 'trap \"sleep 1; touch %s; exit 0\" TERM; while :; do sleep 0.05; done' & '%s' -test.run=^$ \$1 & wait" sh {addr}`, finished, exe)
	reg := &registry{}
	p, err := NewProcess("api", ProcessSpec{Command: cmd, Max: 1, HealthPath: "/health", StopTimeout: 5 * time.Second}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Scale(context.Background(), Request{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	pgid := p.instances[0].cmd.Process.Pid
	p.mu.Unlock()
	defer syscall.Kill(-pgid, syscall.SIGKILL)
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(finished); err != nil {
		t.Fatalf("the wrapper's child was not let finish: %v", err)
	}
	awaitGroupGone(t, pgid, 5*time.Second, "the group outlived Close")
}

// An instance whose command exits while what it started keeps serving (a
// wrapper killed on its own, or a command that daemonises, as nginx or
// php-fpm do by default) is replaced; what is left of its process group
// must go with it, or each replacement leaves one more server running on a
// port nobody routes to.
func TestReplacedInstanceLeavesNothingOfItsGroup(t *testing.T) {
	t.Setenv("PERIGEE_TEST_CHILD", "serve")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := fmt.Sprintf(`sh -c "'%s' -test.run=^$ \$1 & wait" sh {addr}`, exe)
	reg := &registry{}
	p, err := NewProcess("api", ProcessSpec{Command: cmd, Max: 1, HealthPath: "/health", StopTimeout: time.Second}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if err := p.Scale(context.Background(), Request{Replicas: 1, Reason: "start"}); err != nil {
		t.Fatal(err)
	}
	first := reg.list()[0]
	p.mu.Lock()
	wrapper := p.instances[0].cmd.Process
	p.mu.Unlock()
	defer syscall.Kill(-wrapper.Pid, syscall.SIGKILL)
	if err := wrapper.Kill(); err != nil { // the wrapper only: its server lives on
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		l := reg.list()
		replaced := len(l) == 1 && l[0] != first
		if replaced && !groupAlive(wrapper.Pid) && get(first) != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the wrapper died: backends %v, its group alive %v, old server answers %v", l, groupAlive(wrapper.Pid), get(first) == nil)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startDeaf scales p to one instance of a child that never becomes healthy
// and ignores SIGTERM, in the background under ctx, and returns the child's
// pid (its group's id) once it runs, and Scale's result.
func startDeaf(t *testing.T, ctx context.Context) (*Process, int, <-chan error) {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "pid")
	t.Setenv("PERIGEE_TEST_CHILD", "deaf")
	t.Setenv("PERIGEE_TEST_PIDFILE", pidFile)
	p, err := NewProcess("api", ProcessSpec{Command: selfCommand(t), Max: 1, HealthPath: "/health",
		StartTimeout: time.Hour, StopTimeout: time.Hour}, &registry{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	scaled := make(chan error, 1)
	go func() { scaled <- p.Scale(ctx, Request{Replicas: 1, Reason: "start"}) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(pidFile)
		if pid, err := strconv.Atoi(string(b)); err == nil && pid > 1 {
			t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
			return p, pid, scaled
		}
		if time.Now().After(deadline) {
			t.Fatal("the child never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An instance still starting when its Scale's context ends (the node
// drains) is killed then, not given the stop timeout: the node waits for
// Scale to return before it stops the actuators.
func TestStartingInstanceStopsWithScaleContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p, pid, scaled := startDeaf(t, ctx)
	defer p.Close(context.Background())
	cancel()
	select {
	case err := <-scaled:
		if err == nil {
			t.Error("a Scale whose context ended reported success")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Scale still running 10s after its context ended, with an instance ignoring SIGTERM")
	}
	awaitGroupGone(t, pid, 5*time.Second, "the still-starting instance that ignores SIGTERM outlived the caller's deadline")
}

// Close stops an instance still starting too, within Close's context.
func TestCloseBoundsAStartingInstance(t *testing.T) {
	p, pid, scaled := startDeaf(t, context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- p.Close(ctx) }()
	for _, c := range []struct {
		what string
		done <-chan error
	}{{"Close", closed}, {"Scale", scaled}} {
		select {
		case err := <-c.done:
			if err == nil {
				t.Errorf("%s reported success though the instance had to be killed", c.what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still running 10s after a 500ms Close began", c.what)
		}
	}
	awaitGroupGone(t, pid, 5*time.Second, "the still-starting instance that ignores SIGTERM outlived the caller's deadline")
}

// A Scale waiting for another scale to finish (here, the replacement of an
// instance that died, which never becomes healthy) gives up when its
// context ends: the node waits for its Scale calls before it closes the
// actuators, and waited out that replacement's start timeout.
func TestScaleWaitingBehindAReplacementHonoursItsContext(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	t.Setenv("PERIGEE_TEST_CHILD", "first-serves")
	t.Setenv("PERIGEE_TEST_MARK", filepath.Join(dir, "mark"))
	t.Setenv("PERIGEE_TEST_PIDFILE", pidFile)
	p, err := NewProcess("api", ProcessSpec{Command: selfCommand(t), Max: 2, HealthPath: "/health",
		StartTimeout: time.Hour, StopTimeout: time.Hour}, &registry{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Scale(context.Background(), Request{Replicas: 1, Reason: "start"}); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	first := p.instances[0].cmd.Process
	p.mu.Unlock()
	first.Kill() // its replacement is deaf
	deadline := time.Now().Add(20 * time.Second)
	var pid int
	for pid <= 1 {
		if time.Now().After(deadline) {
			t.Fatal("no replacement started")
		}
		time.Sleep(20 * time.Millisecond)
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(string(b))
	}
	defer syscall.Kill(-pid, syscall.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	scaled := make(chan error, 1)
	go func() { scaled <- p.Scale(ctx, Request{Replicas: 2, Reason: "more"}) }()
	select {
	case err := <-scaled:
		if err == nil {
			t.Error("a Scale whose context ended reported success")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Scale still waiting 10s after its context ended, behind a replacement that never becomes healthy")
	}
	closeCtx, cancelClose := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancelClose()
	closed := make(chan error, 1)
	go func() { closed <- p.Close(closeCtx) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close still running 10s after a 500ms Close began")
	}
	awaitGroupGone(t, pid, 5*time.Second, "the replacement that ignores SIGTERM outlived Close")
}

// A child's output is the operator's program's, not the node's: one that
// prints in a tight loop must not fill the node's log (nor push the node's
// own lines out of it). Its lines go out at a bounded rate, and the next
// one let through says how many were not.
func TestChattyChildIsLoggedAtABoundedRate(t *testing.T) {
	t.Setenv("PERIGEE_TEST_CHILD", "serve")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const lines = 200_000
	// After the flood, a second's pause, so that its count goes out with
	// the next window's first line.
	cmd := fmt.Sprintf(`sh -c "yes 'a chatty line' | head -n %d; sleep 1.1; echo 'a chatty line'; exec '%s' -test.run=^$ \$1" sh {addr}`, lines, exe)
	var out logtest.Buffer
	p, err := NewProcess("api", ProcessSpec{Command: cmd, Max: 1, HealthPath: "/health", StopTimeout: time.Second}, &registry{},
		slog.New(slog.NewJSONHandler(&out, nil)))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.Scale(context.Background(), Request{Replicas: 1, Reason: "start"}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	defer p.Close(context.Background())
	logged, dropped := 0, 0
	for line := range strings.Lines(out.String()) {
		var rec struct {
			Msg     string `json:"msg"`
			Dropped int    `json:"dropped_before"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec.Msg == "a chatty line" {
			logged++
			dropped += rec.Dropped
		}
	}
	// Every window the flood spanned may let its burst through.
	windows := int(took/time.Second) + 2
	t.Logf("%d of %d lines logged in %v, %d counted as dropped", logged, lines, took.Round(time.Millisecond), dropped)
	if limit := windows * childLogBurst; logged > limit {
		t.Fatalf("%d of a child's %d lines reached the log in %v; want at most %d", logged, lines, took.Round(time.Millisecond), limit)
	}
	if logged+dropped != lines+1 {
		t.Errorf("%d logged and %d counted of %d lines: every line is one or the other", logged, dropped, lines+1)
	}
}
