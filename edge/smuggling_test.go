package edge

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// smuggleCase is one line of edge/urlpath/testdata/smuggling.txt.
type smuggleCase struct {
	line     int
	raw      string
	statuses []int
	seen     []string // "METHOD path body" of each request a backend read whole
}

func readSmugglingCorpus(t *testing.T) []smuggleCase {
	t.Helper()
	b, err := os.ReadFile("urlpath/testdata/smuggling.txt")
	if err != nil {
		t.Fatal(err)
	}
	var cases []smuggleCase
	for i, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line == "" || line[0] == '#' {
			continue
		}
		raw, rest, err := quotedFields(line, 1)
		if err != nil {
			t.Fatalf("smuggling.txt:%d: %v", i+1, err)
		}
		rest, _, _ = strings.Cut(rest, "#")
		c := smuggleCase{line: i + 1, raw: raw[0]}
		statuses, rest, _ := strings.Cut(strings.TrimSpace(rest), " ")
		for s := range strings.SplitSeq(statuses, ",") {
			code, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("smuggling.txt:%d: status %q", i+1, s)
			}
			c.statuses = append(c.statuses, code)
		}
		for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
			f := strings.SplitN(rest, " ", 3)
			if len(f) < 3 {
				t.Fatalf("smuggling.txt:%d: request %q", i+1, rest)
			}
			body, more, err := quotedFields(strings.TrimSpace(f[2]), 1)
			if err != nil {
				t.Fatalf("smuggling.txt:%d: %v", i+1, err)
			}
			c.seen = append(c.seen, f[0]+" "+f[1]+" "+strconv.Quote(body[0]))
			rest = more
		}
		cases = append(cases, c)
	}
	return cases
}

// seenLog notes each request a backend read to its end.
type seenLog struct {
	mu   sync.Mutex
	seen []string
}

func (l *seenLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // a body cut short: the backend saw the request fail
	}
	l.mu.Lock()
	l.seen = append(l.seen, r.Method+" "+r.RequestURI+" "+strconv.Quote(string(body)))
	l.mu.Unlock()
}

func (l *seenLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.seen
	l.seen = nil
	return s
}

// The node and its backend never disagree on where a request ends: each
// case of the smuggling corpus gets its documented answers, and the backend
// reads exactly the requests the corpus lists.
func TestSmugglingCorpus(t *testing.T) {
	log := &seenLog{}
	// A request cut short waits for its body no longer than this.
	n := startNode(t, nodeYAML("round_robin", serveBackend(t, log))+"timeouts: {client_body: 1s}\n")
	for _, c := range readSmugglingCorpus(t) {
		statuses := rawExchange(t, n.Addrs().HTTP, c.raw, len(c.statuses))
		// The backend has read a request before the node answers it.
		seen := log.take()
		if slices.Equal(c.statuses, []int{400}) && slices.Equal(statuses, []int{408}) && len(seen) == 0 {
			// The corpus's client half-closes; this one holds the
			// connection open, so a body cut short times out before the
			// node can call it malformed.
			continue
		}
		if !slices.Equal(statuses, c.statuses) || !slices.Equal(seen, c.seen) {
			t.Errorf("smuggling.txt:%d %q:\n  answers %v, want %v\n  backend read %q, want %q", c.line, c.raw, statuses, c.statuses, seen, c.seen)
		}
	}
}

// rawExchange writes raw on a new connection and returns the status of
// every answer until the node closes. It half-closes the connection once
// the node has given the answers expected, or closed: a client that
// half-closes sooner is one that left, to net/http, which cancels the
// request.
func rawExchange(t *testing.T, addr, raw string, expected int) []int {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	var statuses []int
	for {
		if len(statuses) == expected {
			conn.(*net.TCPConn).CloseWrite()
		}
		if _, err := br.Peek(1); err != nil {
			return statuses // the node closed
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Errorf("%q: reading answer %d: %v", raw, len(statuses)+1, err)
			return statuses
		}
		statuses = append(statuses, resp.StatusCode)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
