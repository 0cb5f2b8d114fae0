package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"perigee/edge/route"
	"perigee/edge/urlpath"
	"perigee/edge/urlpath/corpus"
)

// checkParser runs the node's smuggling and path corpora against
// fasthttp's HTTP/1.1 server, the gate docs/benchmarks.md sets before
// fasthttp may serve the node's HTTP/1.1: its parser must answer every
// case as the node does and hand on exactly what the node's backends
// read. The handler does what the node's own handler does before it
// routes (method and host rules, the path normaliser on the raw target),
// so what differs is the parser's. It writes one line a case that
// differs, and the counts.
func checkParser(smuggling, paths, out string) error {
	s, err := checkSmuggling(smuggling)
	if err != nil {
		return err
	}
	p, err := checkPaths(paths)
	if err != nil {
		return err
	}
	head := fmt.Sprintf("fasthttp %s against the node's request corpora, %s\ncommand: cd bench/h1server && go run . -corpus\n\n",
		fasthttpVersion(), time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Print(head + s + "\n" + p)
	return os.WriteFile(out, []byte(head+s+"\n"+p), 0o644)
}

// serve starts a fasthttp server with the limits the node's would have:
// its header cap and client timeouts. Its parse errors go unlogged; the
// answers on the wire are what is compared.
func serve(h fasthttp.RequestHandler) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &fasthttp.Server{Handler: h, ReadTimeout: time.Second, ReadBufferSize: 64 << 10, Logger: quiet{}}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { ln.Close() }, nil
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

func checkSmuggling(file string) (string, error) {
	cases, err := corpus.Smuggling(file)
	if err != nil {
		return "", err
	}
	var seen seenLog
	addr, stop, err := serve(seen.handle)
	if err != nil {
		return "", err
	}
	defer stop()

	var b strings.Builder
	differ := 0
	for _, c := range cases {
		statuses, err := corpus.Exchange(addr, c.Raw, len(c.Statuses))
		got := seen.Take()
		if err == nil && slices.Equal(statuses, c.Statuses) && slices.Equal(got, c.Seen) {
			continue
		}
		differ++
		fmt.Fprintf(&b, "smuggling.txt:%d %q\n  fasthttp: answers %v, handed on %q", c.Line, c.Raw, statuses, got)
		if err != nil {
			fmt.Fprintf(&b, ", %v", err)
		}
		fmt.Fprintf(&b, "\n  node:     answers %v, handed on %q\n", c.Statuses, c.Seen)
	}
	return fmt.Sprintf("%s: %d of %d cases differ\n%s", filepath.Base(file), differ, len(cases), b.String()), nil
}

// checkPaths sends each target of the path corpus and normalises what
// fasthttp hands the handler as the raw target, as the node would.
func checkPaths(file string) (string, error) {
	cases, err := corpus.Paths(file)
	if err != nil {
		return "", err
	}
	addr, stop, err := serve(func(ctx *fasthttp.RequestCtx) { ctx.Write(ctx.RequestURI()) })
	if err != nil {
		return "", err
	}
	defer stop()

	var b strings.Builder
	differ, changed := 0, 0
	for _, c := range cases {
		status, target, err := getTarget(addr, c.Target)
		if err != nil {
			return "", fmt.Errorf("%s:%d: %w", file, c.Line, err)
		}
		if target != c.Target && status == fasthttp.StatusOK {
			changed++
		}
		got := "refused " + strconv.Itoa(status)
		if status == fasthttp.StatusOK {
			got = normal(target)
		}
		switch {
		case got == c.Answer, strings.HasPrefix(c.Answer, "reject:") && status == fasthttp.StatusBadRequest:
			continue
		case strings.ContainsAny(c.Target, " \t") && status == fasthttp.StatusBadRequest:
			continue // a space ends the target: net/http refuses the request line too
		}
		differ++
		fmt.Fprintf(&b, "corpus.txt:%d %q\n  fasthttp: %s (target handed on %q)\n  node:     %s\n", c.Line, c.Target, got, target, c.Answer)
	}
	return fmt.Sprintf("%s: %d of %d cases differ; %d targets were handed on changed\n%s", filepath.Base(file), differ, len(cases), changed, b.String()), nil
}

// normal is what the node routes on and forwards for a raw target, in the
// corpus's spelling.
func normal(target string) string {
	p, q, err := urlpath.Normalize(target)
	var e urlpath.Error
	if errors.As(err, &e) {
		return "reject:" + e.Code()
	}
	if err != nil {
		return "reject:" + err.Error()
	}
	if q != "" {
		p += "?" + q
	}
	return p
}

// getTarget sends one GET for target and reads the status and body.
func getTarget(addr, target string) (int, string, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET "+target+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// seenLog is a handler that notes each request it read whole.
type seenLog struct{ corpus.Seen }

func (l *seenLog) handle(ctx *fasthttp.RequestCtx) {
	method, host := string(ctx.Method()), string(ctx.Host())
	p, _, err := urlpath.Normalize(string(ctx.RequestURI()))
	if !route.ValidMethod(method) || !route.ValidHost(host) || err != nil {
		ctx.Error("refused", fasthttp.StatusBadRequest)
		return
	}
	l.Note(method, p, ctx.PostBody())
	ctx.WriteString("ok")
}

// fasthttpVersion is the fasthttp this binary was built with.
func fasthttpVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "github.com/valyala/fasthttp" {
				return d.Version
			}
		}
	}
	return "(unknown version)"
}
