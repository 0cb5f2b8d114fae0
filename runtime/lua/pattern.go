package lua

import "strings"

// A Lua 5.1 pattern matcher that counts its steps. Backtracking over a
// pattern like ".-.-.-.-b" is exponential in the subject's length, and
// gopher-lua's matcher cannot be interrupted, so every step here calls
// tick, which stops the match when the call's deadline or budget is spent.

// maxPatternDepth bounds the matcher's recursion, as Lua's C matcher does;
// each recursion level is one pattern item, so only a pathological pattern
// reaches it.
const maxPatternDepth = 200

// maxCaptures is Lua's LUA_MAXCAPTURES.
const maxCaptures = 32

const (
	capOpen     = -1 // capture started, not closed
	capPosition = -2 // a () position capture
)

type matcher struct {
	src, pat string
	tick     func()
	raise    func(format string, args ...any) // raises a Lua error; does not return
	depth    int
	level    int
	capStart [maxCaptures]int
	capLen   [maxCaptures]int
}

func (m *matcher) fail(msg string) { m.raise("%s", msg) }

// classEnd returns the index just after the single-character class at p.
func (m *matcher) classEnd(p int) int {
	pat := m.pat
	c := pat[p]
	p++
	switch c {
	case '%':
		if p >= len(pat) {
			m.fail("malformed pattern (ends with '%')")
		}
		return p + 1
	case '[':
		if p < len(pat) && pat[p] == '^' {
			p++
		}
		for first := true; ; first = false {
			if p >= len(pat) {
				m.fail("malformed pattern (missing ']')")
			}
			c := pat[p]
			p++
			switch {
			case c == ']' && !first:
				return p
			case c == '%':
				if p >= len(pat) {
					m.fail("malformed pattern (missing ']')")
				}
				p++
			}
		}
	}
	return p
}

// classMatches reports whether c is in the class letter cl (%a, %d, ...);
// an upper-case letter is the complement, any other character itself.
func classMatches(c byte, cl byte) bool {
	var in bool
	switch cl | 0x20 {
	case 'a':
		in = isAlpha(c)
	case 'c':
		in = c < 32 || c == 127
	case 'd':
		in = c >= '0' && c <= '9'
	case 'l':
		in = c >= 'a' && c <= 'z'
	case 'p':
		in = c > 32 && c < 127 && !isAlpha(c) && !(c >= '0' && c <= '9')
	case 's':
		in = c == ' ' || (c >= '\t' && c <= '\r')
	case 'u':
		in = c >= 'A' && c <= 'Z'
	case 'w':
		in = isAlpha(c) || (c >= '0' && c <= '9')
	case 'x':
		in = (c >= '0' && c <= '9') || (c|0x20 >= 'a' && c|0x20 <= 'f')
	case 'z':
		in = c == 0
	default:
		return cl == c
	}
	if cl >= 'A' && cl <= 'Z' {
		return !in
	}
	return in
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// setMatches reports whether c is in the set pat[p:ep], which starts at '['
// and ends with ']'.
func (m *matcher) setMatches(c byte, p, ep int) bool {
	pat := m.pat
	p++  // '['
	ep-- // ']'
	negate := false
	if pat[p] == '^' {
		negate = true
		p++
	}
	for ; p < ep; p++ {
		switch {
		case pat[p] == '%' && p+1 < ep:
			p++
			if classMatches(c, pat[p]) {
				return !negate
			}
		case p+2 < ep && pat[p+1] == '-':
			if pat[p] <= c && c <= pat[p+2] {
				return !negate
			}
			p += 2
		case pat[p] == c:
			return !negate
		}
	}
	return negate
}

// single reports whether src[s] matches the class pat[p:ep].
func (m *matcher) single(s, p, ep int) bool {
	if s >= len(m.src) {
		return false
	}
	c := m.src[s]
	switch m.pat[p] {
	case '.':
		return true
	case '%':
		return classMatches(c, m.pat[p+1])
	case '[':
		return m.setMatches(c, p, ep)
	}
	return m.pat[p] == c
}

// match matches pat[p:] at src[s:] and returns the end of the match or -1.
func (m *matcher) match(s, p int) int {
	if m.depth++; m.depth > maxPatternDepth {
		m.fail("pattern too complex")
	}
	r := m.matchHere(s, p)
	m.depth--
	return r
}

func (m *matcher) matchHere(s, p int) int {
	for {
		m.tick()
		if p >= len(m.pat) {
			return s
		}
		switch m.pat[p] {
		case '(':
			if p+1 < len(m.pat) && m.pat[p+1] == ')' {
				return m.startCapture(s, p+2, capPosition)
			}
			return m.startCapture(s, p+1, capOpen)
		case ')':
			return m.endCapture(s, p+1)
		case '$':
			if p+1 == len(m.pat) {
				if s == len(m.src) {
					return s
				}
				return -1
			}
		case '%':
			if p+1 < len(m.pat) {
				switch c := m.pat[p+1]; {
				case c == 'b':
					if s = m.balance(s, p+2); s == -1 {
						return -1
					}
					p += 4
					continue
				case c == 'f':
					p += 2
					if p >= len(m.pat) || m.pat[p] != '[' {
						m.fail("missing '[' after '%f' in pattern")
					}
					ep := m.classEnd(p)
					var prev, cur byte
					if s > 0 {
						prev = m.src[s-1]
					}
					if s < len(m.src) {
						cur = m.src[s]
					}
					if m.setMatches(prev, p, ep) || !m.setMatches(cur, p, ep) {
						return -1
					}
					p = ep
					continue
				case c >= '0' && c <= '9':
					if s = m.backref(s, c); s == -1 {
						return -1
					}
					p += 2
					continue
				}
			}
		}
		ep := m.classEnd(p)
		ok := m.single(s, p, ep)
		if ep < len(m.pat) {
			switch m.pat[ep] {
			case '?':
				if ok {
					if r := m.match(s+1, ep+1); r != -1 {
						return r
					}
				}
				p = ep + 1
				continue
			case '*':
				return m.maxExpand(s, p, ep)
			case '+':
				if !ok {
					return -1
				}
				return m.maxExpand(s+1, p, ep)
			case '-':
				return m.minExpand(s, p, ep)
			}
		}
		if !ok {
			return -1
		}
		s++
		p = ep
	}
}

func (m *matcher) maxExpand(s, p, ep int) int {
	n := 0
	for m.single(s+n, p, ep) {
		m.tick()
		n++
	}
	for ; n >= 0; n-- {
		if r := m.match(s+n, ep+1); r != -1 {
			return r
		}
	}
	return -1
}

func (m *matcher) minExpand(s, p, ep int) int {
	for {
		if r := m.match(s, ep+1); r != -1 {
			return r
		}
		if !m.single(s, p, ep) {
			return -1
		}
		s++
	}
}

func (m *matcher) startCapture(s, p, what int) int {
	if m.level >= maxCaptures {
		m.fail("too many captures")
	}
	m.capStart[m.level], m.capLen[m.level] = s, what
	m.level++
	r := m.match(s, p)
	if r == -1 {
		m.level--
	}
	return r
}

func (m *matcher) endCapture(s, p int) int {
	l := -1
	for i := m.level - 1; i >= 0; i-- {
		if m.capLen[i] == capOpen {
			l = i
			break
		}
	}
	if l == -1 {
		m.fail("invalid pattern capture")
	}
	m.capLen[l] = s - m.capStart[l]
	r := m.match(s, p)
	if r == -1 {
		m.capLen[l] = capOpen
	}
	return r
}

// balance matches %bxy at src[s:], pat[p:p+2] holding x and y.
func (m *matcher) balance(s, p int) int {
	if p+1 >= len(m.pat) {
		m.fail("malformed pattern (missing arguments to '%b')")
	}
	if s >= len(m.src) || m.src[s] != m.pat[p] {
		return -1
	}
	open, close := m.pat[p], m.pat[p+1]
	depth := 1
	for i := s + 1; i < len(m.src); i++ {
		m.tick()
		switch m.src[i] {
		case close:
			if depth--; depth == 0 {
				return i + 1
			}
		case open:
			depth++
		}
	}
	return -1
}

func (m *matcher) backref(s int, c byte) int {
	l := int(c - '1')
	if l < 0 || l >= m.level || m.capLen[l] == capOpen {
		m.fail("invalid capture index")
	}
	capture := m.src[m.capStart[l] : m.capStart[l]+m.capLen[l]]
	for range len(capture) / 1024 {
		m.tick()
	}
	if strings.HasPrefix(m.src[s:], capture) {
		return s + len(capture)
	}
	return -1
}

// capture returns capture i of a match of src[s:e]: a string, or an int
// position (1-based) for a position capture. Capture 0 of a pattern
// without captures is the whole match.
func (m *matcher) capture(i, s, e int) any {
	if i >= m.level {
		if i != 0 {
			m.fail("invalid capture index")
		}
		return m.src[s:e]
	}
	switch l := m.capLen[i]; l {
	case capOpen:
		m.fail("unfinished capture")
	case capPosition:
		return m.capStart[i] + 1
	}
	return m.src[m.capStart[i] : m.capStart[i]+m.capLen[i]]
}

// captures returns every capture of a match of src[s:e], or the whole
// match when the pattern has none.
func (m *matcher) captures(s, e int) []any {
	n := max(m.level, 1)
	out := make([]any, n)
	for i := range n {
		out[i] = m.capture(i, s, e)
	}
	return out
}

// find looks for the first match at or after init; it returns the match's
// bounds or -1, -1. An anchored pattern ("^...") is tried at init only.
func (m *matcher) find(init int, anchored bool) (int, int) {
	p := 0
	if anchored {
		p = 1
	}
	for s := init; s <= len(m.src); s++ {
		m.level = 0
		if e := m.match(s, p); e != -1 {
			return s, e
		}
		if anchored {
			break
		}
	}
	return -1, -1
}

// hasSpecials reports whether pat needs the matcher rather than a plain
// substring search.
func hasSpecials(pat string) bool { return strings.ContainsAny(pat, "^$*+?.([%-") }
