// Package urlpath turns a request target into the one path the gateway
// routes on and forwards, so that no spelling of a path reaches a backend as
// a resource other than the one its route matched.
//
// Normalize applies these rules, in this order, and refuses (every refusal
// is the client's: answer 400 with the Error's text) what they cannot make
// unambiguous:
//
//   - The target is origin-form ("/p?q") or absolute-form
//     ("http://host/p?q", scheme http or https in any case; the authority is
//     the caller's, as r.Host). Anything else, "*" and CONNECT's
//     authority-form included, is ErrNotPath.
//   - '#' anywhere is ErrFragment: a fragment is never part of a target.
//   - The query, after the first '?', is kept verbatim; its bytes must be
//     visible ASCII (0x21-0x7E), else ErrBadQuery. An empty query is none.
//   - A '%' must start a two-digit hex escape, else ErrBadEscape. Escapes are
//     decoded once, never twice: %252e stays %252e.
//   - Escapes of unreserved bytes (ALPHA DIGIT - . _ ~) are decoded; the
//     others are kept, in uppercase hex (%3d becomes %3D; %3D and '=' stay
//     distinct, as RFC 3986 6.2.2.2 has it).
//   - A slash or a backslash in any spelling other than a raw '/' (%2F, '\',
//     %5C) is ErrEncodedSlash or ErrBackslash: a backend that decodes them
//     would split segments where the router saw none.
//   - ';', raw or %3B, is ErrParameter: servlet containers strip ";params"
//     from a segment before resolving dots, so "/public/..;/private" would
//     reach them as "/private" after matching "/public/".
//   - A control byte (0x00-0x1F, 0x7F), raw or encoded, is ErrControl.
//   - The path's bytes, raw and decoded alike, must be UTF-8, else
//     ErrNotUTF8. This refuses overlong forms such as %C0%AE, which lenient
//     decoders turn into '.'.
//   - Other bytes a path may not carry raw (space " < > [ ] ^ ` { | } and
//     non-ASCII) are percent-encoded, as browsers do.
//   - Repeated slashes are merged; then dot segments are removed as in
//     RFC 3986 5.2.4, "." and ".." in any spelling (%2E included). ".." at
//     the root stays at the root. A trailing slash is kept.
//
// The result is in normal form: Normalize returns it unchanged, and when the
// target was already normal it returns a substring of it without allocating.
// Segments are otherwise compared byte for byte: case, trailing dots
// ("/private./"), and Unicode look-alikes (fullwidth %EF%BC%8E) are names of
// their own, which a backend that folds them must not be routed around.
package urlpath

import (
	"strings"
	"unicode/utf8"
)

// Error is why a request target was refused.
type Error uint8

// The reasons Normalize refuses a target.
const (
	ErrNotPath      Error = iota + 1 // neither origin-form nor absolute-form
	ErrFragment                      // '#' in the target
	ErrBadQuery                      // a query byte outside 0x21-0x7E
	ErrBadEscape                     // '%' not followed by two hex digits
	ErrEncodedSlash                  // %2F
	ErrBackslash                     // '\' or %5C
	ErrParameter                     // ';' or %3B
	ErrControl                       // a control byte, raw or encoded
	ErrNotUTF8                       // bytes, raw or decoded, that are not UTF-8
)

var reasons = [...]struct{ code, text string }{
	{"unknown", "bad request target"},
	ErrNotPath:      {"not-path", "request target is not a path"},
	ErrFragment:     {"fragment", "fragment (#) in request target"},
	ErrBadQuery:     {"bad-query", "invalid byte in query"},
	ErrBadEscape:    {"bad-escape", "malformed percent-escape in path"},
	ErrEncodedSlash: {"encoded-slash", "encoded slash (%2F) in path"},
	ErrBackslash:    {"backslash", "backslash in path"},
	ErrParameter:    {"parameter", "path parameter (;) in path"},
	ErrControl:      {"control", "control byte in path"},
	ErrNotUTF8:      {"not-utf8", "path is not UTF-8"},
}

func (e Error) reason() int {
	if int(e) >= len(reasons) {
		return 0
	}
	return int(e)
}

// Error is the reason to give the client with the 400.
func (e Error) Error() string { return reasons[e.reason()].text }

// Code is a short stable name for logs, metrics and test corpora.
func (e Error) Code() string { return reasons[e.reason()].code }

// Normalize returns the normal path of a request target (r.RequestURI) and
// its query, verbatim and without the '?'. A non-nil error is an Error.
func Normalize(target string) (path, query string, err error) {
	if !strings.HasPrefix(target, "/") {
		if target, err = absolutePath(target); err != nil {
			return "", "", err
		}
	}
	p, query, _ := strings.Cut(target, "?")
	if path, err = normalPath(p); err != nil {
		return "", "", err
	}
	for i := 0; i < len(query); i++ {
		switch c := query[i]; {
		case c == '#':
			return "", "", ErrFragment
		case c <= ' ' || c >= 0x7f:
			return "", "", ErrBadQuery
		}
	}
	return path, query, nil
}

// absolutePath is the path and query of an absolute-form target.
func absolutePath(target string) (string, error) {
	scheme, rest, ok := strings.Cut(target, "://")
	if !ok || !strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https") {
		return "", ErrNotPath
	}
	i := strings.IndexAny(rest, "/?#")
	switch {
	case i < 0:
		return "/", nil
	case rest[i] == '#':
		return "", ErrFragment
	case rest[i] == '?':
		return "/" + rest[i:], nil
	}
	return rest[i:], nil
}

// What a byte is in a path, raw or decoded.
const (
	unreserved = iota + 1 // ALPHA DIGIT - . _ ~
	pchar                 // the other bytes a segment may carry raw: sub-delims save ';', and ':' '@'
	encode                // printable bytes a path may not carry raw, and non-ASCII
	slash
	percent
	backslash
	semicolon
	hash
	control
)

var class = func() (t [256]uint8) {
	for c := range t {
		switch {
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9':
			t[c] = unreserved
		case c < ' ' || c == 0x7f:
			t[c] = control
		case c >= 0x80:
			t[c] = encode
		}
	}
	for _, c := range "-._~" {
		t[c] = unreserved
	}
	for _, c := range "!$&'()*+,=:@" {
		t[c] = pchar
	}
	for _, c := range " \"<>[]^`{|}?" { // '?' only ever decoded: a raw one ends the path
		t[c] = encode
	}
	t['/'], t['%'], t['\\'], t[';'], t['#'] = slash, percent, backslash, semicolon, hash
	return t
}()

// classErr is the refusal for a byte of a class no path may carry.
var classErr = [...]error{
	backslash: ErrBackslash,
	semicolon: ErrParameter,
	hash:      ErrFragment,
	control:   ErrControl,
}

// normalPath normalises p, which starts with '/' and holds no '?'.
func normalPath(p string) (string, error) {
	out := lazybuf{s: p, w: 1}
	var u utf8Run
	seg := 1 // where the current segment starts in out
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			if !u.add('/') {
				return "", ErrNotUTF8
			}
			seg = out.endSegment(seg)
			if i < len(p) && out.last() != '/' {
				out.add('/')
				seg = out.w
			}
			continue
		}
		c, cls, escaped := p[i], class[p[i]], false
		if cls == percent {
			if i+2 >= len(p) || !ishex(p[i+1]) || !ishex(p[i+2]) {
				return "", ErrBadEscape
			}
			c = unhex(p[i+1])<<4 | unhex(p[i+2])
			cls, escaped = class[c], true
			i += 2
			switch c {
			case '/':
				return "", ErrEncodedSlash
			case '#', '%':
				cls = encode // data once encoded
			}
		}
		if !u.add(c) {
			return "", ErrNotUTF8
		}
		switch {
		case cls == unreserved, cls == pchar && !escaped:
			out.add(c)
		case cls == pchar, cls == encode:
			out.add('%')
			out.add(upperhex[c>>4])
			out.add(upperhex[c&15])
		default:
			return "", classErr[cls]
		}
	}
	return out.String(), nil
}

// lazybuf builds the output without allocating while it is a prefix of the
// input, as path.Clean does; unlike path.Clean's, the output may grow past
// the input (an encoded byte takes three).
type lazybuf struct {
	s   string
	buf []byte // nil while the output is s[:w]
	w   int
}

func (b *lazybuf) at(i int) byte {
	if b.buf == nil {
		return b.s[i]
	}
	return b.buf[i]
}

func (b *lazybuf) last() byte { return b.at(b.w - 1) }

func (b *lazybuf) add(c byte) {
	if b.buf == nil {
		if b.w < len(b.s) && b.s[b.w] == c {
			b.w++
			return
		}
		b.buf = make([]byte, b.w, len(b.s)+8)
		copy(b.buf, b.s[:b.w])
	}
	b.buf = append(b.buf[:b.w], c)
	b.w++
}

// endSegment removes the segment that starts at seg if it is "." or "..",
// and the one before it for "..", and returns where the next one starts.
func (b *lazybuf) endSegment(seg int) int {
	n := b.w - seg
	if n == 0 || n > 2 || b.at(seg) != '.' || n == 2 && b.at(seg+1) != '.' {
		return seg
	}
	b.w = seg // after a '/': the root, or a segment's end
	if n == 2 && seg > 1 {
		for b.w--; b.at(b.w-1) != '/'; b.w-- {
		}
	}
	return b.w
}

func (b *lazybuf) String() string {
	if b.buf == nil {
		return b.s[:b.w]
	}
	return string(b.buf[:b.w])
}

// utf8Run checks, a byte at a time, that the path's bytes spell UTF-8.
type utf8Run struct {
	buf     [utf8.UTFMax]byte
	n, need int
}

func (u *utf8Run) add(c byte) bool {
	if c < utf8.RuneSelf {
		return u.n == 0
	}
	if u.n == 0 {
		switch {
		case 0xc2 <= c && c <= 0xdf:
			u.need = 2
		case 0xe0 <= c && c <= 0xef:
			u.need = 3
		case 0xf0 <= c && c <= 0xf4:
			u.need = 4
		default:
			return false
		}
	}
	u.buf[u.n] = c
	if u.n++; u.n < u.need {
		return true
	}
	u.n = 0
	_, size := utf8.DecodeRune(u.buf[:u.need]) // refuses overlong forms and surrogates
	return size == u.need
}

const upperhex = "0123456789ABCDEF"

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}
