package h1client

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestHeadRefusals pins what the parser refuses beyond, or as well as,
// net/http.ReadResponse: each would let the head be read two ways.
func TestHeadRefusals(t *testing.T) {
	for _, tc := range []struct{ name, reply string }{
		{"white space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"},
		{"tab before the colon", "HTTP/1.1 200 OK\r\nContent-Length\t: 2\r\n\r\nok"},
		{"status under 100", "HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok"},
		{"status of two digits", "HTTP/1.1 99 Low\r\n\r\n"},
		{"signed status", "HTTP/1.1 +99 Low\r\n\r\n"},
		{"HTTP/2 on an HTTP/1 connection", "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"HTTP/0.9", "HTTP/0.9 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"bare CR in the status line", "HTTP/1.1 200 OK\rContent-Length: 5\r\n\r\nok"},
		{"bare CR in a value", "HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 5\r\nContent-Length: 2\r\n\r\nok"},
		{"NUL in a value", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok"},
		{"bare CR in a name", "HTTP/1.1 200 OK\r\nX\rA: a\r\nContent-Length: 2\r\n\r\nok"},
		{"empty name", "HTTP/1.1 200 OK\r\n: a\r\nContent-Length: 2\r\n\r\nok"},
		{"no colon", "HTTP/1.1 200 OK\r\nContent-Length 2\r\n\r\nok"},
		{"first field folded", "HTTP/1.1 200 OK\r\n Content-Length: 2\r\n\r\nok"},
		{"empty Content-Length", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nok"},
		{"Content-Length list", "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"},
		{"Content-Length overflow", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nok"},
		{"Content-Length in hex", "HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok"},
		{"two Transfer-Encoding fields", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{"Transfer-Encoding identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nok"},
		{"Transfer-Encoding with a space inside", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chun ked\r\n\r\nok"},
		{"Content-Length folded after Transfer-Encoding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length:\r\n 2\r\n\r\nok"},
		{"bad trailer key", "HTTP/1.1 200 OK\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{"bad Content-Length in a 103", "HTTP/1.1 103 Early Hints\r\nContent-Length: -1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"blank line for a status line", "\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"no end of head", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunk := range []int{1, len(tc.reply) + 1} {
				if got := exchangeOver(t, []byte(tc.reply), false, chunk); got.err == nil {
					t.Errorf("read %d bytes at a time: %s, want an error", chunk, got.summary())
				}
			}
		})
	}
}

// TestHeadFields checks the header and framing fields the parser fills
// against what net/http.ReadResponse fills, on heads both take.
func TestHeadFields(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
		head        bool
		want        string // outcome summary
	}{
		{"plain", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 2\r\nX-Multi: a\r\nx-multi: b\r\n\r\nok", false, "200 OK body ok reusable"},
		{"folded value", "HTTP/1.1 200 OK\r\nX-Fold: a\r\n  b\r\n\tc\r\nContent-Length: 2\r\n\r\nok", false, "200 OK body ok reusable"},
		{"HEAD with a length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, "200 OK body  reusable"},
		{"HEAD, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, "200 OK body  reusable"},
		{"204 with a length", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false, "204 No Content body  reusable"},
		{"304, chunked", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", false, "304 Not Modified body  reusable"},
		{"zero length", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, "200 OK body  reusable"},
		{"declared and undeclared trailers", "HTTP/1.1 200 OK\r\nTrailer: X-Sum, x-other\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\nX-Late: 2\r\n\r\n", false, "200 OK body ok reusable"},
		{"Trailer field without chunking", "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nContent-Length: 2\r\n\r\nok", false, "200 OK body ok reusable"},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", false, "200 OK body ok reusable"},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false, "200 OK body ok"},
		{"Connection: close", "HTTP/1.1 200 OK\r\nConnection: x, close\r\nX: 1\r\nContent-Length: 2\r\n\r\nok", false, "200 OK body ok"},
		{"status without a reason", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", false, "200 body ok reusable"},
		{"reason with obs-text", "HTTP/1.1 200 Ok\xe2\x9c\x93\r\nContent-Length: 2\r\n\r\nok", false, "200 Ok\xe2\x9c\x93 body ok reusable"},
		{"HTTP/1.2", "HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok", false, "200 OK body ok reusable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := exchangeOver(t, []byte(tc.reply), tc.head, 7)
			if got.summary() != tc.want {
				t.Fatalf("got %q, want %q", got.summary(), tc.want)
			}
			if diff := againstNetHTTP(t, []byte(tc.reply), tc.head, got); diff != "" {
				t.Fatal(diff)
			}
		})
	}
}

// FuzzHead: whatever net/http refuses (with the checks the client adds
// to it), the client refuses too; what both take, they read alike: the
// status, the framing, the header, the body and the trailers.
// Seeds: testdata/fuzz/FuzzHead.
func FuzzHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), false)
	f.Add([]byte("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n"), false)
	f.Add([]byte("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"), true)
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		got := exchangeOver(t, data, head, 3)
		if diff := againstNetHTTP(t, data, head, got); diff != "" {
			t.Fatal(diff)
		}
	})
}

// againstNetHTTP reads data as the client did before it parsed heads
// itself (net/http.ReadResponse, interim heads skipped, and both
// Transfer-Encoding and Content-Length refused) and says how got differs.
func againstNetHTTP(t *testing.T, data []byte, head bool, got outcome) string {
	method := http.MethodGet
	if head {
		method = http.MethodHead
	}
	req := httptest.NewRequest(method, "http://backend/", nil)
	br := bufio.NewReaderSize(bytes.NewReader(data), 4<<10)
	var want *http.Response
	var err error
	for {
		want, err = http.ReadResponse(br, req)
		if err != nil || want.StatusCode > 199 || want.StatusCode == 101 {
			break
		}
	}
	if err == nil && want.StatusCode == 101 {
		err = errors.New("101")
	}
	if err == nil && want.TransferEncoding != nil && finalHeadHas(data, "Content-Length") {
		err = errors.New("both")
	}
	switch {
	case err != nil && got.err == nil:
		return "net/http refused it (" + err.Error() + "); the client took it: " + got.summary()
	case err != nil || got.err != nil:
		return "" // refused by both, or by the client's stricter rules
	}
	wantBody, wantBodyErr := io.ReadAll(want.Body)
	g := got.resp
	switch {
	case g.StatusCode != want.StatusCode || g.Status != want.Status || g.Proto != want.Proto || g.ProtoMinor != want.ProtoMinor:
		return "status line: got " + g.Proto + " " + g.Status + ", want " + want.Proto + " " + want.Status
	case g.ContentLength != want.ContentLength:
		return "ContentLength differs"
	case !slices.Equal(g.TransferEncoding, want.TransferEncoding):
		return "TransferEncoding differs"
	case g.Close != want.Close:
		return "Close differs"
	case (g.Body == http.NoBody) != (want.Body == http.NoBody):
		return "one body is NoBody, the other not"
	case wantBodyErr != nil && got.bodyErr == nil:
		return "net/http's body failed (" + wantBodyErr.Error() + "), the client's did not"
	case got.bodyErr == nil && !bytes.Equal(got.body, wantBody):
		return "body: got " + string(got.body) + ", want " + string(wantBody)
	}
	if d := sameHeader(g.Header, want.Header); d != "" {
		return "header: " + d
	}
	if got.bodyErr == nil {
		if d := sameHeader(g.Trailer, want.Trailer); d != "" {
			return "trailer: " + d
		}
	}
	return ""
}

// sameHeader compares headers, but for what net/http alone does: it drops
// Connection when it holds close, adds Cache-Control for Pragma: no-cache,
// and keeps more white space of folded lines.
func sameHeader(got, want http.Header) string {
	norm := func(h http.Header) map[string]string {
		m := map[string]string{}
		for k, vv := range h {
			if k == "Connection" || k == "Cache-Control" {
				continue
			}
			m[k] = strings.Join(strings.Fields(strings.Join(vv, "\x01")), " ")
		}
		return m
	}
	g, w := norm(got), norm(want)
	for k, v := range w {
		if g[k] != v {
			return k + ": got " + url.QueryEscape(g[k]) + ", want " + url.QueryEscape(v)
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			return "got " + k + ", net/http has none"
		}
	}
	return ""
}

// finalHeadHas says whether the first head of data that is not an
// interim one has a line naming field (folded lines aside).
func finalHeadHas(data []byte, field string) bool {
	final, found := false, false
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "" && final:
			return found
		case line == "":
			final = false
		case !final && strings.HasPrefix(line, "HTTP/"):
			_, status, _ := strings.Cut(line, " ")
			final = !strings.HasPrefix(strings.TrimLeft(status, " "), "1") || strings.HasPrefix(strings.TrimLeft(status, " "), "101")
		case final && strings.HasPrefix(strings.ToLower(line), strings.ToLower(field)+":"):
			found = true
		}
	}
	return found
}

// TestLongLines: a line longer than the read buffer is one line, and the
// head's limit counts every byte of every head.
func TestLongLines(t *testing.T) {
	long := strings.Repeat("v", 100)
	reply := "HTTP/1.1 103 Early Hints\r\nLink: " + long + "\r\n\r\nHTTP/1.1 200 OK\r\nX-Long: " + long + "\r\n\r\n"
	br := bufio.NewReaderSize(strings.NewReader(reply), 16)
	limit := int64(len(reply) + lineOverhead*strings.Count(reply, "\n"))
	var heads []string
	for range 2 {
		b, err := readHead(br, nil, &limit)
		if err != nil {
			t.Fatal(err)
		}
		h, err := parseHead(string(b))
		if err != nil {
			t.Fatal(err)
		}
		heads = append(heads, h.r.Status+" "+h.r.Header.Get("Link")+h.r.Header.Get("X-Long"))
	}
	if want := []string{"103 Early Hints " + long, "200 OK " + long}; !slices.Equal(heads, want) {
		t.Fatalf("heads %q, want %q", heads, want)
	}
	if limit != 0 {
		t.Fatalf("limit left %d, want 0", limit)
	}
	br = bufio.NewReaderSize(strings.NewReader(reply), 16)
	limit = int64(len(reply)+lineOverhead*strings.Count(reply, "\n")) - 1 // a byte short
	if _, err := readHead(br, nil, &limit); err != nil {
		t.Fatal(err)
	}
	if _, err := readHead(br, nil, &limit); !errors.Is(err, errHeadTooLarge) {
		t.Fatalf("second head over the limit: err = %v, want errHeadTooLarge", err)
	}
}

func TestHeadAllocs(t *testing.T) {
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 64\r\nDate: Tue, 01 Dec 2026 15:00:00 GMT\r\n\r\n"
	n := testing.AllocsPerRun(100, func() {
		if _, err := parseHead(head); err != nil {
			t.Fatal(err)
		}
	})
	// The string, the values' array, the header map, the head and its
	// response: net/http.ReadResponse takes 11 and its body two more.
	if n > 5 {
		t.Fatalf("parseHead: %v allocations, want at most 5", n)
	}
}

// TestFoldedHeadMemory: a head of many folded lines costs memory in
// proportion to its size, not to its square (hostile backends).
func TestFoldedHeadMemory(t *testing.T) {
	head := "HTTP/1.1 200 OK\r\nX-Fold: a\r\n" + strings.Repeat(" b\r\n", 16<<10) + "Content-Length: 0\r\n\r\n"
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	h, err := parseHead(head)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(h.r.Header.Get("X-Fold")); got != 1+2*(16<<10) {
		t.Fatalf("folded value of %d bytes", got)
	}
	if used := after.TotalAlloc - before.TotalAlloc; used > 16*uint64(len(head)) {
		t.Fatalf("parsing a %d-byte head allocated %d bytes", len(head), used)
	}
}

// A head of many tiny fields cost 26 times its size once parsed: 64 KiB
// of "a:" lines made 21,000 header values, 1.6 MiB per response, before
// the proxy copied them again. Each line is charged lineOverhead more, as
// HTTP/2 charges a field 32 bytes (RFC 9113 6.5.2), so the head limit
// bounds the count of fields too.
func TestTinyFieldsAreChargedTheirOverhead(t *testing.T) {
	const limit = 64 << 10
	head := "HTTP/1.1 200 OK\r\n" + strings.Repeat("a:\n", (limit-40)/3) + "\r\n"
	if len(head) > limit {
		t.Fatalf("the hostile head is %d bytes, over the %d limit it must fit", len(head), limit)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	left := int64(limit)
	b, err := readHead(bufio.NewReader(strings.NewReader(head)), nil, &left)
	if err == nil {
		_, err = parseHead(string(b))
	}
	runtime.ReadMemStats(&after)
	used := after.TotalAlloc - before.TotalAlloc
	t.Logf("a %d-byte head of %d fields: %v, %d KiB allocated", len(head), strings.Count(head, "\n")-2, err, used>>10)
	if !errors.Is(err, errHeadTooLarge) || used > 4*limit {
		t.Fatalf("err = %v, %d KiB allocated; want errHeadTooLarge within %d KiB", err, used>>10, 4*limit>>10)
	}
	// An ordinary head of a thousand fields still fits.
	head = "HTTP/1.1 200 OK\r\n" + strings.Repeat("Set-Cookie: id=0123456789\r\n", 1000) + "\r\n"
	left = limit
	if _, err := readHead(bufio.NewReader(strings.NewReader(head)), nil, &left); err != nil {
		t.Fatalf("a head of 1,000 cookies: %v", err)
	}
}
