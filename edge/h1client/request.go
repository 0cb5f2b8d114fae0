package h1client

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// The request is written here rather than by net/http.Request.Write,
// which costs five allocations a request, for what a proxy sends: an
// origin-form target, an ASCII host, a body of known length or chunked.
// The bytes are the same as Request.Write's (fields in key order, values
// with CR and LF made spaces). The rest (trailers, CONNECT, a body of
// unknown length on a GET that net/http probes first, an IDN or zoned
// host) goes to Request.Write.

// writable says whether writeRequest writes req as Request.Write would.
func writable(req *http.Request) bool {
	te := req.TransferEncoding
	switch {
	case req.URL.Opaque != "", req.Method == http.MethodConnect, len(req.Trailer) > 0,
		len(te) > 1, len(te) == 1 && te[0] != "chunked",
		req.ContentLength != 0 && req.Body == nil:
		return false
	case hasBody(req) && req.ContentLength <= 0 && len(te) == 0 && BodilessMethod(req.Method):
		return false // Request.Write reads a byte first to see if it is empty
	}
	host := cmpOr(req.Host, req.URL.Host)
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 || host[i] == '%' {
			return false // punycode, or an IPv6 zone to remove
		}
	}
	return true
}

// BodilessMethod reports whether a request of this method with a body of
// unknown length goes out with no body framing at all when the body turns
// out empty: Request.Write reads a byte first to see, for these methods.
func BodilessMethod(method string) bool {
	switch method {
	case "", "GET", "HEAD", "DELETE", "OPTIONS", "PROPFIND", "SEARCH":
		return true
	}
	return false
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// errBodyRead marks an error reading the request body.
type errBodyRead struct{ err error }

func (e errBodyRead) Error() string { return e.err.Error() }

// writeRequest writes req, which writable took, to bw, and closes its
// body, as Request.Write does.
func (c *conn) writeRequest(bw *bufio.Writer, req *http.Request) error {
	if req.Body != nil {
		defer req.Body.Close()
	}
	u := req.URL
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	query := u.ForceQuery || u.RawQuery != ""
	if hasCTL(path) || hasCTL(u.RawQuery) {
		return errors.New("h1client: control character in request URL")
	}
	host := cmpOr(req.Host, u.Host)
	if !httpguts.ValidHostHeader(host) {
		host = "" // as Request.Write does: an empty Host is valid
	}
	bw.WriteString(cmpOr(req.Method, "GET"))
	bw.WriteByte(' ')
	bw.WriteString(path)
	if query {
		bw.WriteByte('?')
		bw.WriteString(u.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	ua := "Go-http-client/1.1"
	if vv, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(vv) > 0 {
			ua = vv[0]
		}
	}
	if ua != "" {
		writeField(bw, "User-Agent", ua)
	}
	if req.Close && !hasToken(req.Header["Connection"], "close") {
		bw.WriteString("Connection: close\r\n")
	}

	length := int64(0)
	if hasBody(req) {
		length = req.ContentLength
		if length == 0 || len(req.TransferEncoding) > 0 {
			length = -1
		}
	}
	switch {
	case length < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case length > 0 || req.Method == "POST" || req.Method == "PUT" || req.Method == "PATCH":
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), length, 10))
		bw.WriteString("\r\n")
	}

	fields := c.fields[:0]
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		fields = append(fields, field{k, vv})
	}
	slices.SortFunc(fields, func(a, b field) int { return strings.Compare(a.key, b.key) })
	for _, f := range fields {
		if !httpguts.ValidHeaderFieldName(f.key) {
			continue // dropped, as Request.Write does
		}
		for _, v := range f.values {
			writeField(bw, f.key, v)
		}
	}
	clear(fields) // a pooled connection holds no request's header
	c.fields = fields
	bw.WriteString("\r\n")
	if length == 0 {
		return nil
	}
	// The backend may need the head before the body comes.
	if err := bw.Flush(); err != nil {
		return err
	}
	return writeBody(bw, req.Body, length)
}

// field is one of the request's header fields, as writeRequest orders them.
type field struct {
	key    string
	values []string
}

// writeField writes one field line, its value with CR and LF made spaces
// and trimmed, as Request.Write does.
func writeField(bw *bufio.Writer, k, v string) {
	for len(v) > 0 && isFieldSpace(v[0]) {
		v = v[1:]
	}
	for len(v) > 0 && isFieldSpace(v[len(v)-1]) {
		v = v[:len(v)-1]
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	for i := indexCRLF(v); i >= 0; i = indexCRLF(v) {
		bw.WriteString(v[:i])
		bw.WriteByte(' ')
		v = v[i+1:]
	}
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// indexCRLF is the index of v's first CR or LF, or -1: one pass, where
// strings.IndexAny builds a set on each call, for every field of every
// request.
func indexCRLF(v string) int {
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			return i
		}
	}
	return -1
}

// isFieldSpace is what Request.Write trims off a field value.
func isFieldSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\r' || b == '\n' }

func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' || b == 0x7f {
			return true
		}
	}
	return false
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// writeBody copies body to bw: length bytes, or chunked if it is -1,
// each chunk flushed (a stream's messages go when they come).
func writeBody(bw *bufio.Writer, body io.Reader, length int64) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var sent int64
	for {
		p := buf
		if length >= 0 && length-sent < int64(len(p)) {
			p = p[:max(length-sent, 1)] // one byte past the length finds a longer body
		}
		n, rerr := body.Read(p)
		if length >= 0 && sent+int64(n) > length {
			return fmt.Errorf("h1client: request body longer than its Content-Length %d", length)
		}
		sent += int64(n)
		if n > 0 {
			if length < 0 {
				bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(n), 16))
				bw.WriteString("\r\n")
			}
			bw.Write(p[:n])
			if length < 0 {
				bw.WriteString("\r\n")
				if err := bw.Flush(); err != nil {
					return err
				}
			}
		}
		switch {
		case rerr == io.EOF && length >= 0 && sent < length:
			return fmt.Errorf("h1client: request body of %d bytes, shorter than its Content-Length %d", sent, length)
		case rerr == io.EOF && length < 0:
			bw.WriteString("0\r\n\r\n")
			return nil
		case rerr == io.EOF:
			return nil
		case rerr != nil:
			return errBodyRead{rerr}
		}
	}
}
