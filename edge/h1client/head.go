package h1client

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
)

// The response head is parsed here rather than by net/http.ReadResponse,
// which costs a dozen allocations a response: the head is read into a
// pooled buffer and made one string, of which the header's keys and values
// are substrings. The parser refuses at least what ReadResponse refuses,
// and more where framing could be read two ways: a field name with white
// space before its colon (RFC 9112 5.1), a status code under 100, control
// bytes in the status line, an HTTP major version other than 1. Like
// ReadResponse it takes bare LF line ends and replaces obs-fold with a
// space (RFC 9112 5.2).

var errHeadTooLarge = errors.New("h1client: response head too large")

// lineOverhead is what each line of a head costs beyond its bytes, as
// HTTP/2 charges a field 32 bytes (RFC 9113 6.5.2): a field is a map
// entry and a value once parsed, so the byte limit bounds their count too.
const lineOverhead = 32

// readHead appends one head, from the status line to its blank line, to
// buf; *left is what the exchange's heads may still take, 1xx included,
// each line charged lineOverhead more than its length.
func readHead(br *bufio.Reader, buf []byte, left *int64) ([]byte, error) {
	line := len(buf)
	for {
		frag, err := br.ReadSlice('\n')
		cost := int64(len(frag))
		if len(buf) == line {
			cost += lineOverhead // the line's first fragment
		}
		if cost > *left {
			return buf, errHeadTooLarge
		}
		*left -= cost
		buf = append(buf, frag...)
		switch {
		case err == bufio.ErrBufferFull:
			continue // a line longer than br's buffer
		case err == io.EOF:
			return buf, io.ErrUnexpectedEOF
		case err != nil:
			return buf, err
		}
		if l := buf[line:]; len(l) == 1 || len(l) == 2 && l[0] == '\r' {
			return buf, nil
		}
		line = len(buf)
	}
}

// cutLine splits s after its first line, dropping the line's end (LF or
// CRLF).
func cutLine(s string) (line, rest string) {
	line, rest, _ = strings.Cut(s, "\n")
	return strings.TrimSuffix(line, "\r"), rest
}

// head is one parsed response head and what its framing says.
// One allocation holds it, its response and the response's body.
type head struct {
	r       http.Response
	body    body
	cl      int64 // the Content-Length, or -1
	te      bool  // a Transfer-Encoding field was present
	chunked bool
}

// parseHead parses s, a whole head as readHead reads it.
func parseHead(s string) (*head, error) {
	line, s := cutLine(s)
	proto, status, ok := strings.Cut(line, " ")
	if !ok || len(line) == 0 {
		return nil, fmt.Errorf("h1client: malformed HTTP response %q", clip(line))
	}
	status = strings.TrimLeft(status, " ")
	if len(proto) != len("HTTP/1.1") || !strings.HasPrefix(proto, "HTTP/1.") || !isDigit(proto[7]) {
		return nil, fmt.Errorf("h1client: malformed HTTP version %q", clip(proto))
	}
	code, reason, _ := strings.Cut(status, " ")
	if len(code) != 3 || !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) || code[0] == '0' {
		return nil, fmt.Errorf("h1client: malformed HTTP status code %q", clip(code))
	}
	for i := 0; i < len(reason); i++ {
		if !validValueByte(reason[i]) {
			return nil, fmt.Errorf("h1client: malformed HTTP status line %q", clip(line))
		}
	}
	h := &head{cl: -1, r: http.Response{
		Status: status, StatusCode: int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0'),
		Proto: proto, ProtoMajor: 1, ProtoMinor: int(proto[7] - '0'),
	}}

	// One backing array for the values: most fields have one.
	fields := min(strings.Count(s, "\n"), 1000)
	values := make([]string, fields)
	hdr := make(http.Header, fields)
	var tev []string
	if folded(s) {
		return nil, fmt.Errorf("h1client: malformed header: folded first line %q", clip(s))
	}
	for {
		line, s = cutLine(s)
		if line == "" {
			break
		}
		if folded(s) { // obs-fold: one space for each line break
			var b strings.Builder
			b.WriteString(trimOWS(line))
			for folded(s) {
				var more string
				more, s = cutLine(s)
				b.WriteByte(' ')
				b.WriteString(trimOWS(more))
			}
			line = b.String()
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !validName(name) {
			return nil, fmt.Errorf("h1client: malformed header line %q", clip(line))
		}
		for i := 0; i < len(value); i++ {
			if !validValueByte(value[i]) {
				return nil, fmt.Errorf("h1client: malformed header line %q", clip(line))
			}
		}
		key, value := textproto.CanonicalMIMEHeaderKey(name), trimOWS(value)
		if key == "Transfer-Encoding" {
			tev = append(tev, value)
			continue // net/http keeps it out of the header too
		}
		if vv := hdr[key]; vv != nil || len(values) == 0 {
			hdr[key] = append(vv, value)
		} else {
			vv, values = values[:1:1], values[1:]
			vv[0] = value
			hdr[key] = vv
		}
	}
	h.r.Header = hdr
	if err := h.framing(hdr["Content-Length"], tev); err != nil {
		return nil, err
	}
	return h, nil
}

// framing reads the Content-Length and Transfer-Encoding values. Both in
// one head are refused, as nginx does (RFC 9112 6.3: it "ought to be
// handled as an error"); on HTTP/1.0, Transfer-Encoding is ignored (and
// the connection closed after, RFC 9112 6.1).
func (h *head) framing(clv, tev []string) error {
	if len(clv) > 0 {
		for _, v := range clv[1:] {
			if v != clv[0] {
				return fmt.Errorf("h1client: conflicting Content-Length values %q", clv)
			}
		}
		n, ok := parseLength(clv[0])
		if !ok {
			return fmt.Errorf("h1client: bad Content-Length %q", clip(clv[0]))
		}
		h.cl = n
		if len(clv) > 1 {
			h.r.Header["Content-Length"] = clv[:1]
		}
	}
	h.te = tev != nil
	switch {
	case h.te && h.cl >= 0:
		return errors.New("h1client: response has both Transfer-Encoding and Content-Length")
	case !h.te || h.r.ProtoMinor == 0:
	case len(tev) != 1:
		return fmt.Errorf("h1client: too many transfer encodings %q", tev)
	case !strings.EqualFold(tev[0], "chunked"):
		return fmt.Errorf("h1client: unsupported transfer encoding %q", clip(tev[0]))
	default:
		h.chunked = true
	}
	return nil
}

// parseLength is a Content-Length: digits only, at most 2^63-1.
func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false // 18 digits cannot overflow
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

// readResponse reads the final response head, passing interim 1xx ones
// (100 Continue, 103 Early Hints) to the request's httptrace, as
// net/http does: httputil.ReverseProxy forwards them to its client. The
// body is set up by the caller.
func (c *conn) readResponse(req *http.Request, limit int64) (*head, error) {
	for {
		buf, err := readHead(c.br, (*c.head)[:0], &limit)
		*c.head = buf
		if err != nil {
			return nil, err
		}
		h, err := parseHead(string(buf))
		if err != nil {
			return nil, err
		}
		code := h.r.StatusCode
		if code > 199 || code == http.StatusSwitchingProtocols {
			h.r.Request = req
			return h, nil
		}
		if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(h.r.Header)); err != nil {
				return nil, err
			}
		}
	}
}

// readTrailer reads the trailer section after a chunked body's last chunk
// into resp.Trailer, within the head's byte limit.
func readTrailer(br *bufio.Reader, resp *http.Response, limit int64) error {
	if b, err := br.Peek(2); err == nil && b[0] == '\r' && b[1] == '\n' {
		br.Discard(2) // the common case: none
		return nil
	}
	buf := heads.Get().(*[]byte)
	defer putHeadBuf(buf)
	// A status line of our own makes the section a head parseHead reads.
	const status = "HTTP/1.1 200 \n"
	b, err := readHead(br, append((*buf)[:0], status...), &limit)
	*buf = b
	if err != nil {
		return fmt.Errorf("h1client: reading trailer: %w", err)
	}
	// Unlike a head, a trailer section ends in CRLF lines only, as
	// net/http requires: where it ends is where the message does.
	if n := bytes.Count(b[len(status):], []byte("\n")); n != bytes.Count(b[len(status):], []byte("\r\n")) {
		return errors.New("h1client: bare LF in a trailer")
	}
	h, err := parseHead(string(b))
	if err != nil {
		return fmt.Errorf("h1client: reading trailer: %w", err)
	}
	if h.te {
		return errors.New("h1client: Transfer-Encoding in a trailer")
	}
	delete(h.r.Header, "Content-Length") // framing is the head's alone
	if resp.Trailer == nil {
		resp.Trailer = h.r.Header
		return nil
	}
	for k, v := range h.r.Header {
		resp.Trailer[k] = v
	}
	return nil
}

// declaredTrailer moves a chunked response's Trailer field into
// resp.Trailer as keys without values, as net/http does.
func declaredTrailer(resp *http.Response) error {
	vv, ok := resp.Header["Trailer"]
	if !ok {
		return nil
	}
	delete(resp.Header, "Trailer")
	t := http.Header{}
	for _, v := range vv {
		for k := range strings.SplitSeq(v, ",") {
			k = http.CanonicalHeaderKey(textproto.TrimString(k))
			switch k {
			case "":
				continue
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return fmt.Errorf("h1client: bad trailer key %q", k)
			}
			t[k] = nil
		}
	}
	if len(t) > 0 {
		resp.Trailer = t
	}
	return nil
}

// folded says whether the line s starts with continues the one before.
func folded(s string) bool { return len(s) > 0 && (s[0] == ' ' || s[0] == '\t') }

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// validName is a field name: one or more token characters (RFC 9110 5.1).
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenByte[s[i]] {
			return false
		}
	}
	return true
}

// validValueByte: field values and reason phrases hold no control bytes
// but HTAB (RFC 9110 5.5); obs-text is allowed.
func validValueByte(b byte) bool { return b >= 0x20 && b != 0x7f || b == '\t' }

func trimOWS(s string) string { return strings.Trim(s, " \t") }

var tokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// clip shortens what an error quotes of a hostile head.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
