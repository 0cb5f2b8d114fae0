package mesh

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"perigee/telemetry"
)

// TestMain lets the test binary run as one mesh node in a child process,
// for the tests that need real processes (a SIGSTOPped leader).
func TestMain(m *testing.M) {
	if id := os.Getenv("MESH_CHILD_ID"); id != "" {
		os.Exit(runChild(id))
	}
	os.Exit(m.Run())
}

// runChild starts a node on real loopback sockets, prints "addr <addr>",
// then a line "lead <term> <ok> <before> <after>" whenever its Leadership
// changes and at least every 100 ms, with the wall clock (Unix ns) read
// just before and after the call: the processes share the host's clock,
// so the parent can order their claims in time. It leaves when its stdin
// closes.
func runChild(id string) int {
	var join []string
	if j := os.Getenv("MESH_CHILD_JOIN"); j != "" {
		join = []string{j}
	}
	cfg := Config{Bind: "127.0.0.1:0", Join: join, KeyringFile: os.Getenv("MESH_CHILD_KEYRING"), Tuning: fastTuning, Timing: fastTiming}
	sample := func() telemetry.NodeSample { return telemetry.NodeSample{} }
	c, err := Start(context.Background(), cfg, NodeMeta{ID: id, Region: "eu"}, sample, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Shutdown()
	fmt.Printf("addr %s\n", c.Addr())
	gone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(gone)
	}()
	var last string
	var at time.Time
	for {
		select {
		case <-gone:
			return 0
		case <-time.After(10 * time.Millisecond):
		}
		before := time.Now().UnixNano()
		term, ok := c.Leadership()
		after := time.Now().UnixNano()
		if line := fmt.Sprintf("lead %d %v", term, ok); line != last || time.Since(at) > 100*time.Millisecond || ok {
			fmt.Println(line, before, after)
			last, at = line, time.Now()
		}
	}
}

// proc is a node in a child process, as the parent sees it.
type proc struct {
	id   string
	cmd  *exec.Cmd
	addr string

	mu   sync.Mutex
	term uint64 // its Leadership, as last printed
	ok   bool
	at   time.Time // when that line came
}

// leadership is the child's Leadership as last printed, and when.
func (p *proc) leadership() (uint64, bool) {
	term, ok, _ := p.leadershipAt()
	return term, ok
}

func (p *proc) leadershipAt() (uint64, bool, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.term, p.ok, p.at
}

// startProc runs a child node; every claim it prints goes to cl, and its
// time to sp.
func startProc(t *testing.T, id, join, keyring string, cl *claims, sp *spans) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MESH_CHILD_ID="+id, "MESH_CHILD_JOIN="+join, "MESH_CHILD_KEYRING="+keyring)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{id: id, cmd: cmd}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 2 && f[0] == "addr":
				addr <- f[1]
			case len(f) == 5 && f[0] == "lead":
				term, _ := strconv.ParseUint(f[1], 10, 64)
				ok := f[2] == "true"
				before, _ := strconv.ParseInt(f[3], 10, 64)
				after, _ := strconv.ParseInt(f[4], 10, 64)
				p.mu.Lock()
				p.term, p.ok, p.at = term, ok, time.Now()
				p.mu.Unlock()
				if ok {
					cl.record(id, term)
					sp.record(term, time.Unix(0, before), time.Unix(0, after))
				}
			}
		}
	}()
	select {
	case p.addr = <-addr:
	case <-time.After(45 * time.Second):
		t.Fatalf("child %s did not start", id)
	}
	return p
}

// procsLeading lists the children that lead now, with their terms.
func procsLeading(procs []*proc) map[string]uint64 {
	out := map[string]uint64{}
	for _, p := range procs {
		if term, ok := p.leadership(); ok {
			out[p.id] = term
		}
	}
	return out
}

// The leader process is SIGSTOPped for 20 s and continued, as in the
// issue. Another process leads meanwhile under a higher term; the resumed
// one does not lead under its old term, nor under the new leader's; no
// term is ever claimed by two processes, terms only rise, and every
// claim of a term ended before the first claim of a later one began.
func TestSIGSTOPLeaderProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes for about 40 s")
	}
	keyring := writeKeyring(t, base64.StdEncoding.EncodeToString([]byte("sigstop-test-key")))
	cl := &claims{holders: map[uint64][]string{}}
	sp := newSpans()
	first := startProc(t, "proc-a", "", keyring, cl, sp)
	procs := []*proc{first}
	for _, id := range []string{"proc-b", "proc-c"} {
		procs = append(procs, startProc(t, id, first.addr, keyring, cl, sp))
	}
	eventually(t, "proc-a leads, alone", func() bool {
		l := procsLeading(procs)
		return len(l) == 1 && l["proc-a"] > 0
	})
	before, _ := first.leadership()
	// Let the others learn the term before the pause.
	time.Sleep(3 * time.Second)
	if err := first.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	var during uint64
	eventually(t, "another process leads during the pause", func() bool {
		l := procsLeading(procs[1:])
		for _, term := range l {
			during = term
		}
		return len(l) == 1 && during > before
	})
	time.Sleep(time.Until(stopped.Add(20 * time.Second)))
	if err := first.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	// What it printed before the pause says nothing of now: watch only
	// what it prints after resuming.
	eventually(t, "the resumed process prints", func() bool {
		_, _, at := first.leadershipAt()
		return at.After(resumed)
	})
	for deadline := time.Now().Add(8 * time.Second); time.Now().Before(deadline); {
		if term, ok, at := first.leadershipAt(); ok && at.After(resumed) && term <= during {
			t.Fatalf("the resumed process leads under term %d, not above the new leader's %d", term, during)
		}
		time.Sleep(20 * time.Millisecond)
	}
	eventually(t, "one leader after the pause", func() bool { return len(procsLeading(procs)) == 1 })
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for term, ids := range cl.holders {
		if len(ids) > 1 {
			t.Errorf("term %d claimed by %v", term, ids)
		}
	}
	for i := 1; i < len(cl.order); i++ {
		if cl.order[i] <= cl.order[i-1] {
			t.Errorf("terms claimed in the order %v: not strictly increasing", cl.order)
		}
	}
	t.Logf("terms claimed, in order: %v, by %v", cl.order, cl.holders)
	sp.check(t)
}
