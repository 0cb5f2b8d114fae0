// Package corpus reads the hostile request corpora in edge/urlpath/testdata
// for everything that runs them: the path normaliser's unit test, the
// node's tests over each protocol, and bench/h1server's check of another
// HTTP/1.1 parser against the node's answers. Each file's head says what
// its lines mean.
package corpus

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Path is one line of corpus.txt: a request target and what the node
// routes on and forwards for it.
type Path struct {
	Line   int
	Target string
	Answer string // the normal path, then "?query" if any; or "reject:<code>"
}

// Paths reads a path corpus.
func Paths(file string) ([]Path, error) {
	var cases []Path
	err := eachLine(file, func(n int, line string) error {
		target, rest, err := quoted(line)
		if err != nil {
			return fmt.Errorf("target: %w", err)
		}
		c := Path{Line: n, Target: target}
		if code, ok := strings.CutPrefix(rest, "reject:"); ok {
			c.Answer = "reject:" + strings.Fields(code)[0]
		} else if c.Answer, _, err = quoted(rest); err != nil {
			return fmt.Errorf("answer: %w", err)
		}
		cases = append(cases, c)
		return nil
	})
	return cases, err
}

// Smuggle is one line of smuggling.txt: the bytes a client writes on one
// connection, the node's answers on it, and every request a backend reads
// whole.
type Smuggle struct {
	Line     int
	Raw      string
	Statuses []int
	Seen     []string // "METHOD path body", the body Go-quoted
}

// Smuggling reads a smuggling corpus.
func Smuggling(file string) ([]Smuggle, error) {
	var cases []Smuggle
	err := eachLine(file, func(n int, line string) error {
		raw, rest, err := quoted(line)
		if err != nil {
			return err
		}
		rest, _, _ = strings.Cut(rest, "#")
		c := Smuggle{Line: n, Raw: raw}
		statuses, rest, _ := strings.Cut(strings.TrimSpace(rest), " ")
		for s := range strings.SplitSeq(statuses, ",") {
			code, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("status %q", s)
			}
			c.Statuses = append(c.Statuses, code)
		}
		for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
			f := strings.SplitN(rest, " ", 3)
			if len(f) < 3 {
				return fmt.Errorf("request %q", rest)
			}
			var body string
			if body, rest, err = quoted(f[2]); err != nil {
				return err
			}
			c.Seen = append(c.Seen, f[0]+" "+f[1]+" "+strconv.Quote(body))
		}
		cases = append(cases, c)
		return nil
	})
	return cases, err
}

// eachLine calls do with every line of file that is neither blank nor a
// comment, trimmed, and its number; an error names the file and line.
func eachLine(file string, do func(n int, line string) error) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	for i, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line == "" || line[0] == '#' {
			continue
		}
		if err := do(i+1, line); err != nil {
			return fmt.Errorf("%s:%d: %w", file, i+1, err)
		}
	}
	return nil
}

// quoted reads the Go-quoted string s starts with (after blanks) and
// returns it and the rest, its leading blanks trimmed.
func quoted(s string) (value, rest string, err error) {
	s = strings.TrimLeft(s, " \t")
	q, err := strconv.QuotedPrefix(s)
	if err != nil {
		return "", "", fmt.Errorf("%q: %w", s, err)
	}
	value, err = strconv.Unquote(q)
	return value, strings.TrimLeft(s[len(q):], " \t"), err
}

// Exchange runs one smuggling case against the HTTP/1.1 listener at addr:
// it writes raw on a new connection and returns the status of every answer
// until the server closes. It half-closes once the server has given the
// answers expected: a client that half-closes sooner is one that left, to
// net/http, which cancels the request.
func Exchange(addr, raw string, expected int) ([]int, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		return nil, err
	}
	br := bufio.NewReader(conn)
	var statuses []int
	for {
		if len(statuses) == expected {
			conn.(*net.TCPConn).CloseWrite()
		}
		if _, err := br.Peek(1); err != nil {
			return statuses, nil // the server closed
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return statuses, fmt.Errorf("reading answer %d: %w", len(statuses)+1, err)
		}
		statuses = append(statuses, resp.StatusCode)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// Seen collects the requests a backend read whole, spelt as Smuggle.Seen
// spells them, for a test to compare with a case's.
type Seen struct {
	mu   sync.Mutex
	seen []string
}

// Note records one request read to its end.
func (l *Seen) Note(method, target string, body []byte) {
	l.mu.Lock()
	l.seen = append(l.seen, method+" "+target+" "+strconv.Quote(string(body)))
	l.mu.Unlock()
}

// Take returns what was noted since the last Take.
func (l *Seen) Take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.seen
	l.seen = nil
	return s
}
