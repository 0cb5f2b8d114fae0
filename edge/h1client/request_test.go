package h1client

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// written is what writeRequest, or else Request.Write, sends for req.
func written(t *testing.T, req *http.Request) (string, error) {
	var out bytes.Buffer
	c := &conn{}
	bw := bufio.NewWriter(&out)
	var err error
	if writable(req) {
		err = c.writeRequest(bw, req)
	} else {
		err = writeStd(bw, req)
	}
	bw.Flush()
	return out.String(), err
}

// stdWritten is what Request.Write sends for req.
func stdWritten(req *http.Request) (string, error) {
	var out bytes.Buffer
	err := req.Write(&out)
	return out.String(), err
}

func request(method, target string, body string, header http.Header) *http.Request {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, target, r)
	if err != nil {
		panic(err)
	}
	for k, vv := range header {
		req.Header[k] = vv
	}
	return req
}

// TestRequestBytes: for what a proxy sends, writeRequest writes the bytes
// Request.Write writes.
func TestRequestBytes(t *testing.T) {
	h := http.Header{
		"X-Multi": {"a", "b"}, "Accept": {"*/*"}, "X-Crlf": {" a\r\nb\rc\n "}, "Bad Name": {"x"},
		"Host": {"ignored"}, "Content-Length": {"99"}, "Transfer-Encoding": {"gzip"}, "Trailer": {"X"},
		"User-Agent": {"agent\r\n"}, "Connection": {"keep-alive"}, "Empty": {""}, "None": {},
	}
	closing := request("GET", "http://backend/c", "", nil)
	closing.Close = true
	closed := request("GET", "http://backend/c", "", http.Header{"Connection": {"close"}})
	closed.Close = true
	noUA := request("GET", "http://backend/", "", http.Header{"User-Agent": {""}})
	badHost := request("GET", "http://backend/", "", nil)
	badHost.Host = "bad host\r\nX: 1"
	forced := request("GET", "http://backend/q?", "", nil)
	forced.URL.ForceQuery = true
	raw := request("GET", "http://backend/a%2Fb/c?x=%zz&y", "", nil)
	chunked := request("POST", "http://backend/up", "hello", nil)
	chunked.ContentLength = -1
	te := request("PUT", "http://backend/up", "hello", nil)
	te.TransferEncoding = []string{"chunked"}
	for _, req := range []*http.Request{
		request("GET", "http://backend/", "", nil),
		request("GET", "http://backend:8080/p/a%20th?q=1&r=%2F", "", h),
		request("HEAD", "http://[::1]:80/", "", nil),
		closing, closed, noUA, badHost, forced, raw, chunked, te,
		request("POST", "http://backend/up", "hello", h),
		request("POST", "http://backend/empty", "", nil),
		request("PATCH", "http://backend/empty", "", nil),
		request("DELETE", "http://backend/x", "", nil),
	} {
		want, werr := stdWritten(req.Clone(req.Context()))
		if req.Body != nil {
			req.Body, _ = req.GetBody()
		}
		if !writable(req) {
			t.Errorf("%s %s: not writable", req.Method, req.URL)
			continue
		}
		got, gerr := written(t, req)
		if got != want || (gerr == nil) != (werr == nil) {
			t.Errorf("%s %s:\ngot  %q (%v)\nwant %q (%v)", req.Method, req.URL, got, gerr, want, werr)
		}
	}
}

// TestRequestBodyLength: a body shorter or longer than its Content-Length
// fails the request, and a body's read error is told apart.
func TestRequestBodyLength(t *testing.T) {
	for _, tc := range []struct {
		body string
		n    int64
	}{{"abc", 5}, {"abcdef", 5}} {
		req := request("POST", "http://backend/", tc.body, nil)
		req.ContentLength = tc.n
		if _, err := written(t, req); err == nil {
			t.Errorf("body of %d bytes with Content-Length %d: no error", len(tc.body), tc.n)
		}
	}
	boom := errors.New("boom")
	req := request("POST", "http://backend/", "", nil)
	req.Body, req.ContentLength = io.NopCloser(io.MultiReader(strings.NewReader("ab"), &failing{boom})), 5
	var be errBodyRead
	if _, err := written(t, req); !errors.As(err, &be) || be.err != boom {
		t.Errorf("err = %v, want the body's", err)
	}
}

type failing struct{ err error }

func (f *failing) Read([]byte) (int, error) { return 0, f.err }

// TestRequestFallback: what writeRequest does not write goes to
// Request.Write.
func TestRequestFallback(t *testing.T) {
	trailer := request("POST", "http://backend/", "x", nil)
	trailer.ContentLength, trailer.Trailer = -1, http.Header{"X-Sum": {"1"}}
	probe := request("GET", "http://backend/", "x", nil)
	probe.ContentLength = -1
	idn := request("GET", "http://backend/", "", nil)
	idn.Host = "bücher.example"
	zone := request("GET", "http://[fe80::1%25en0]:80/", "", nil)
	opaque := request("GET", "http://backend/", "", nil)
	opaque.URL = &url.URL{Scheme: "http", Host: "backend", Opaque: "//backend/x"}
	for _, req := range []*http.Request{trailer, probe, idn, zone, opaque} {
		if writable(req) {
			t.Errorf("%s %s (host %q): writable", req.Method, req.URL, req.Host)
		}
	}
}

// FuzzRequestHead: whatever the target, host and field, the head written
// is Request.Write's, or both refuse.
func FuzzRequestHead(f *testing.F) {
	f.Add("GET", "/p?q=1", "backend", "X-A", "v")
	f.Add("POST", "/a%2Fb", "[::1]:80", "bad name", "a\r\nb")
	f.Fuzz(func(t *testing.T, method, target, host, key, value string) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !validMethodForTest(method) {
			return
		}
		u.Scheme, u.Host = "http", "backend"
		req := &http.Request{Method: method, URL: u, Host: host, Header: http.Header{key: {value}}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		if !writable(req) {
			return
		}
		want, werr := stdWritten(req)
		got, gerr := written(t, req)
		if (gerr == nil) != (werr == nil) || gerr == nil && got != want {
			t.Fatalf("got  %q (%v)\nwant %q (%v)", got, gerr, want, werr)
		}
	})
}

func validMethodForTest(m string) bool {
	return m != "" && strings.IndexFunc(m, func(r rune) bool { return r <= ' ' || r >= 0x7f }) < 0
}
