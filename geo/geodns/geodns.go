// Package geodns answers A and AAAA queries for the configured names with
// the addresses of the best nodes for the asking resolver, or for the client
// subnet the resolver passes on (EDNS Client Subnet, RFC 7871).
package geodns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"perigee/connlimit"
	"perigee/geo"
	"perigee/lograte"
)

// maxQuery bounds an accepted query: one question with EDNS fits in far
// less, and larger ones are only good for making us work.
const maxQuery = 512

// maxUDPAnswer bounds an answer over UDP, whatever size the resolver
// announces, and is the size the node announces itself: 1232 bytes fit
// in any path's MTU unfragmented (DNS Flag Day 2020), and a fragmented
// answer is one an off-path attacker can poison with forged fragments.
// What does not fit goes truncated, for the resolver to ask over TCP.
const maxUDPAnswer = 1232

// tcpMaxTotal bounds the TCP connections served at once (BIND's
// tcp-clients is 150), and tcpMaxPerAddress those of one client address
// (connlimit.Key: an IPv4 address or an IPv6 /64), so that one host cannot
// hold them all while resolvers wait. Each holds a descriptor, a goroutine
// and, while a query is read, a buffer of the length it announces, up to
// 64 KiB. One past the per-address bound is reset as it is accepted; one
// past the total closes another to make room (see tcpConns).
const (
	tcpMaxTotal      = 128
	tcpMaxPerAddress = 16
)

// tcpWriteTimeout bounds the write of one answer over TCP: miekg/dns sets
// no write deadline there (its WriteTimeout is unused), so a client that
// stops reading held its connection, goroutine and slot for good. It is
// the library's read timeout, time enough for 64 KiB on any live path.
const tcpWriteTimeout = 2 * time.Second

// udpInFlight bounds the datagrams handled at once: miekg/dns starts a
// goroutine for each it reads, and a flood faster than the answers grew
// them, and the heap, without bound. Past it datagrams wait in the
// socket's buffer, and past that are dropped, as UDP may be.
const udpInFlight = 128

// udpSlots holds one slot per datagram read and not yet done with. The
// library ends a datagram in one of four places, and each gives the slot
// back: the handler, when it answered; MsgInvalidFunc, when it could not
// parse it (or it was shorter than a header); MsgAcceptFunc, when it
// turned it away unparsed; and the reader, when the read failed. These are
// the paths of miekg/dns v1.1.73 (serveUDP, serveDNS); a path that kept a
// slot would stop UDP after 128 datagrams, which the tests would see.
type udpSlots chan struct{}

// reader takes a slot before each datagram is read.
func (s udpSlots) reader(r dns.Reader) dns.Reader { return slotReader{r, s} }

func (s udpSlots) release() { <-s }

func (s udpSlots) invalid(m []byte, err error) { s.release() }

func (s udpSlots) accept(dh dns.Header) dns.MsgAcceptAction {
	action := dns.DefaultMsgAcceptFunc(dh)
	if action != dns.MsgAccept {
		s.release()
	}
	return action
}

func (s udpSlots) handler(h dns.Handler) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		defer s.release()
		h.ServeDNS(w, req)
	})
}

// udpReadTimeout is how long the library waits for a datagram before
// it reads again (its default); each wait that ends empty gives its slot
// back too.
var udpReadTimeout = 2 * time.Second

// slotReader reads UDP only: Serve's PacketConn must be a *net.UDPConn.
type slotReader struct {
	dns.Reader
	slots udpSlots
}

func (r slotReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	r.slots <- struct{}{}
	m, s, err := r.Reader.ReadUDP(conn, timeout)
	if err != nil {
		r.slots.release()
	}
	return m, s, err
}

// tcpConns owns both TCP bounds. When the listener is full, a new
// connection closes the connection idle longest of the address that holds
// the most: refusing the new one let a few hosts, each holding its 16 with
// a query now and then, keep every other resolver out; closing the one
// idle longest anywhere let hosts that keep theirs busy close a
// resolver's a moment after its answer. Each write has its own deadline.
type tcpConns struct {
	net.Listener
	log     *slog.Logger
	refused *lograte.Limit

	mu   sync.Mutex
	open map[*tcpConn]struct{}
	per  map[netip.Prefix]int
}

func newTCPConns(ln net.Listener, log *slog.Logger) *tcpConns {
	return &tcpConns{Listener: ln, log: log, refused: lograte.New(1, 10*time.Second),
		open: map[*tcpConn]struct{}{}, per: map[netip.Prefix]int{}}
}

func (l *tcpConns) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := &tcpConn{Conn: c, of: l, addr: connlimit.Key(c.RemoteAddr())}
		tc.touch()
		admitted, evicted := l.admit(tc)
		if !admitted {
			// Reset, as connlimit.Listen does: no TIME_WAIT left behind.
			if r, ok := c.(interface{ SetLinger(int) error }); ok {
				r.SetLinger(0)
			}
			c.Close()
			if ok, dropped := l.refused.Allow(time.Now()); ok {
				l.log.Warn("geodns TCP connections refused", "last_client", c.RemoteAddr(), "unlogged", dropped,
					"max_per_address", tcpMaxPerAddress)
			}
			continue
		}
		if evicted != nil {
			evicted.Close() // its read fails, and the library lets it go
		}
		return tc, nil
	}
}

// admit counts tc in, unless its address holds its bound; when the
// listener was full, evicted is the connection to close for it, already
// uncounted.
func (l *tcpConns) admit(tc *tcpConn) (admitted bool, evicted *tcpConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.per[tc.addr] >= tcpMaxPerAddress {
		return false, nil
	}
	if len(l.open) >= tcpMaxTotal {
		for o := range l.open {
			if evicted == nil || l.per[o.addr] > l.per[evicted.addr] ||
				l.per[o.addr] == l.per[evicted.addr] && o.active.Load() < evicted.active.Load() {
				evicted = o
			}
		}
		l.forget(evicted)
	}
	l.open[tc] = struct{}{}
	l.per[tc.addr]++
	return true, evicted
}

// forget uncounts c; once only, however often it is closed.
func (l *tcpConns) forget(c *tcpConn) {
	if _, ok := l.open[c]; !ok {
		return
	}
	delete(l.open, c)
	if l.per[c.addr]--; l.per[c.addr] == 0 {
		delete(l.per, c.addr)
	}
}

type tcpConn struct {
	net.Conn
	of     *tcpConns
	addr   netip.Prefix // connlimit.Key of its peer
	active atomic.Int64 // unix nanoseconds of the last read or write
}

func (c *tcpConn) touch() { c.active.Store(time.Now().UnixNano()) }

func (c *tcpConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.touch()
	}
	return n, err
}

func (c *tcpConn) Write(b []byte) (int, error) {
	if err := c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(b)
	c.touch()
	return n, err
}

func (c *tcpConn) Close() error {
	c.of.mu.Lock()
	c.of.forget(c)
	c.of.mu.Unlock()
	return c.Conn.Close()
}

// Handler answers queries with the router's ranking.
type Handler struct {
	names   map[string]bool
	ttl     uint32
	answers int
	router  *geo.Router
	limit   *rateLimit // of UDP answers; nil for none
	log     *slog.Logger
}

// NewHandler builds the DNS handler for cfg.
func NewHandler(cfg geo.DNSConfig, router *geo.Router, log *slog.Logger) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("geodns: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{names: map[string]bool{}, ttl: 20, answers: max(cfg.Answers, 1), router: router, limit: newRateLimit(cfg.RateLimit.Limits()), log: log}
	if cfg.TTL > 0 {
		h.ttl = uint32(max(cfg.TTL/time.Second, 1))
	}
	for _, n := range cfg.Names {
		h.names[dns.CanonicalName(n)] = true
	}
	return h, nil
}

// ServeDNS listens on cfg.Listen over UDP and TCP and answers until ctx ends.
func ServeDNS(ctx context.Context, cfg geo.DNSConfig, router *geo.Router, log *slog.Logger) error {
	h, err := NewHandler(cfg, router, log)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("geodns: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		pc.Close()
		return fmt.Errorf("geodns: %w", err)
	}
	return Serve(ctx, pc, ln, h)
}

// Serve answers on already open sockets until ctx ends, then closes them.
// pc must be a *net.UDPConn.
func Serve(ctx context.Context, pc net.PacketConn, ln net.Listener, h *Handler) error {
	slots := make(udpSlots, udpInFlight)
	servers := []*dns.Server{
		{
			PacketConn: pc, Handler: slots.handler(h), UDPSize: maxQuery, ReadTimeout: udpReadTimeout,
			DecorateReader: slots.reader, MsgInvalidFunc: slots.invalid, MsgAcceptFunc: slots.accept,
		},
		{Listener: newTCPConns(ln, h.log), Handler: h},
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errc <- s.ActivateAndServe() }()
	}
	h.log.Info("geodns serving", "udp", pc.LocalAddr(), "tcp", ln.Addr())
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("geodns: %w", err)
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		// A server that already stopped reports so; that is not news.
		s.ShutdownContext(shutdown)
	}
	return err
}

// ServeDNS answers one query.
func (h *Handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	sender := resolverOf(w.RemoteAddr())
	if udp {
		switch h.limit.verdict(sender, time.Now()) {
		case drop:
			return
		case truncate:
			m := new(dns.Msg)
			m.SetReply(req)
			m.Truncated = true
			w.WriteMsg(m)
			return
		}
	}
	m := h.answer(sender, req)
	if udp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(min(max(opt.UDPSize(), dns.MinMsgSize), maxUDPAnswer))
		}
		m.Truncate(size)
	} else {
		// A node may have any number of addresses: compressed if need be,
		// and cut to what one message holds, the answer always packs.
		m.Truncate(dns.MaxMsgSize)
	}
	if err := w.WriteMsg(m); err != nil {
		h.log.Debug("geodns write failed", "peer", w.RemoteAddr(), "err", err)
		if !udp {
			// A write that timed out may have sent part of an answer: the
			// stream is out of step, and nothing after it could be read.
			w.Close()
		}
	}
}

// answer is the reply to req from sender, the address the query came from.
func (h *Handler) answer(sender netip.Addr, req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = false
	opt := req.IsEdns0()
	fail := func(rcode int) *dns.Msg {
		m.Authoritative = false
		m.Answer, m.Ns = nil, nil
		m.Rcode = rcode
		if opt != nil {
			m.SetEdns0(maxUDPAnswer, false)
		}
		return m
	}
	switch {
	case req.Opcode != dns.OpcodeQuery:
		return fail(dns.RcodeNotImplemented)
	case len(req.Question) != 1 || req.Len() > maxQuery:
		return fail(dns.RcodeFormatError)
	case opt != nil && opt.Version() != 0:
		return fail(dns.RcodeBadVers)
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET || !h.names[dns.CanonicalName(q.Name)] {
		return fail(dns.RcodeRefused)
	}
	client, err := clientOf(sender, opt)
	if err != nil {
		return fail(dns.RcodeFormatError)
	}
	if opt != nil {
		m.SetEdns0(maxUDPAnswer, false)
		if ecs, _ := subnetOption(opt); ecs != nil {
			// Our answer holds for the client's /24 or /48 at most.
			scope := min(ecs.SourceNetmask, map[uint16]uint8{1: 24, 2: 48}[ecs.Family])
			reply := *ecs
			reply.SourceScope = scope
			m.IsEdns0().Option = append(m.IsEdns0().Option, &reply)
		}
	}
	var want func(netip.Addr) bool
	switch q.Qtype {
	case dns.TypeA:
		want = netip.Addr.Is4
	case dns.TypeAAAA:
		want = func(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }
	default:
		m.Ns = []dns.RR{h.soa(q.Name)}
		return m
	}
	d := h.router.DecideNamed(client, sender)
	h.router.Count("dns", d.Reason)
	m.Answer = h.records(q, d, want)
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{h.soa(q.Name)}
	}
	return m
}

// records lists the chosen node's addresses of the asked family, then the
// next eligible nodes' up to the configured number of nodes.
func (h *Handler) records(q dns.Question, d geo.Decision, want func(netip.Addr) bool) []dns.RR {
	var rrs []dns.RR
	nodes := 0
	add := func(s geo.Score) {
		found := false
		for _, a := range s.Addrs {
			if !want(a) {
				continue
			}
			found = true
			hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: h.ttl}
			if a.Is4() {
				rrs = append(rrs, &dns.A{Hdr: hdr, A: a.AsSlice()})
			} else {
				rrs = append(rrs, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
		if found {
			nodes++
		}
	}
	for _, s := range d.Candidates {
		if s.Node == d.Best.ID {
			add(s)
		}
	}
	for _, s := range d.Candidates {
		if nodes >= h.answers || s.Excluded != "" {
			break
		}
		if s.Node != d.Best.ID {
			add(s)
		}
	}
	return rrs
}

// soa is the authority record of a negative answer; its minimum TTL is how
// long resolvers may cache the absence. The mailbox is hostmaster.<name>
// unless that is over 255 octets, which no resolver could read: then the
// name itself stands for it.
func (h *Handler) soa(name string) dns.RR {
	mbox := "hostmaster." + name
	if len(mbox)+1 > 255 { // its wire length, or more when it has escapes
		mbox = name
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: name, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: h.ttl},
		Ns:      name,
		Mbox:    mbox,
		Serial:  1,
		Refresh: 3600, Retry: 600, Expire: 86400,
		Minttl: h.ttl,
	}
}

var errBadSubnet = errors.New("malformed client subnet option")

// clientOf is the address to route for: the client subnet when the
// resolver sent a valid one, else the resolver itself.
func clientOf(sender netip.Addr, opt *dns.OPT) (netip.Addr, error) {
	ecs, more := subnetOption(opt)
	if more {
		// RFC 7871 7.1.1: a resolver and the server could read different ones.
		return netip.Addr{}, errBadSubnet
	}
	if ecs != nil {
		var bits int
		switch ecs.Family {
		case 0:
			// dig's way of saying "no subnet" (only valid with prefix 0).
			bits = 0
		case 1:
			bits = 32
		case 2:
			bits = 128
		default:
			return netip.Addr{}, errBadSubnet
		}
		a, ok := netip.AddrFromSlice(ecs.Address)
		if bits == 0 {
			a, ok = netip.IPv4Unspecified(), true
		}
		if !ok || int(ecs.SourceNetmask) > bits || ecs.SourceScope != 0 || (bits == 128) == a.Unmap().Is4() {
			return netip.Addr{}, errBadSubnet
		}
		p, err := a.Unmap().Prefix(int(ecs.SourceNetmask))
		if err != nil || p.Addr() != a.Unmap() {
			// RFC 7871: bits beyond the source prefix must be zero.
			return netip.Addr{}, errBadSubnet
		}
		if ecs.SourceNetmask > 0 {
			return p.Addr(), nil
		}
		// A zero source prefix asks us not to use the client's address.
	}
	return sender, nil
}

// resolverOf is the address that sent the query; the zero Addr if unreadable.
func resolverOf(peer net.Addr) netip.Addr {
	ap, _ := netip.ParseAddrPort(peerString(peer))
	return ap.Addr().Unmap()
}

func peerString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// subnetOption is opt's ECS option, and whether it has more than one.
func subnetOption(opt *dns.OPT) (ecs *dns.EDNS0_SUBNET, more bool) {
	if opt == nil {
		return nil, false
	}
	for _, o := range opt.Option {
		if s, ok := o.(*dns.EDNS0_SUBNET); ok {
			if ecs != nil {
				return ecs, true
			}
			ecs = s
		}
	}
	return ecs, false
}
