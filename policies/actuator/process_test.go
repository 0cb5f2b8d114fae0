package actuator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestMain turns this test binary into a tiny HTTP backend when the
// process actuator starts it as a child.
func TestMain(m *testing.M) {
	switch os.Getenv("PERIGEE_TEST_CHILD") {
	case "serve":
		addr := os.Args[len(os.Args)-1]
		http.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		fmt.Println("child listening on", addr)
		if err := http.ListenAndServe(addr, nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "exit":
		os.Exit(3)
	}
	os.Exit(m.Run())
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
