package geodns_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"perigee/geo"
	"perigee/geo/demodb"
	"perigee/geo/geodns"
	"perigee/geo/geoip"
)

const name = "edge.example.net."

func fleetNode(id string, c demodb.City, addrs ...string) geo.Node {
	n := geo.Node{ID: id, Lat: c.Lat, Lon: c.Lon, PublicURL: "https://" + id + ".example.net", Alive: true}
	for _, a := range addrs {
		n.Addrs = append(n.Addrs, netip.MustParseAddr(a))
	}
	return n
}

type server struct {
	udp, tcp string
	fleet    *geo.StaticFleet
}

// start runs a real GeoDNS server on loopback UDP and TCP.
func start(t *testing.T, answers int) server {
	t.Helper()
	return startFleet(t, answers, "fra", []geo.Node{
		fleetNode("tyo", demodb.Tokyo, "198.51.100.1", "2001:db8:1::1"),
		fleetNode("fra", demodb.Frankfurt, "198.51.100.2", "2001:db8:2::1"),
		fleetNode("iad", demodb.Virginia, "198.51.100.3"),
	})
}

// startFleet runs it for the fleet of nodes, seen from self, answering for
// names (name if none are given).
func startFleet(t *testing.T, answers int, self string, nodes []geo.Node, names ...string) server {
	t.Helper()
	return startRouter(t, geo.RouterConfig{}, answers, self, nodes, names...)
}

// startRouter is startFleet with the router's settings. Its answers are
// not rate limited: most tests send more than a network may get.
func startRouter(t *testing.T, rcfg geo.RouterConfig, answers int, self string, nodes []geo.Node, names ...string) server {
	t.Helper()
	if len(names) == 0 {
		names = []string{name}
	}
	dcfg := geo.DNSConfig{Listen: "127.0.0.1:0", Names: names, TTL: 20 * time.Second, Answers: answers, RateLimit: geo.DNSRateLimit{PerSecond: -1}}
	return startDNS(t, dcfg, rcfg, self, nodes)
}

// startDNS runs a real GeoDNS server with the DNS settings dcfg.
func startDNS(t *testing.T, dcfg geo.DNSConfig, rcfg geo.RouterConfig, self string, nodes []geo.Node) server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "city.mmdb")
	if err := demodb.Write(path); err != nil {
		t.Fatal(err)
	}
	db, err := geoip.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := geo.NewStaticFleet(self, nodes)
	if err != nil {
		t.Fatal(err)
	}
	router := geo.NewRouter(rcfg, db, fleet, nil)
	h, err := geodns.NewHandler(dcfg, router, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- geodns.Serve(ctx, pc, ln, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return server{udp: pc.LocalAddr().String(), tcp: ln.Addr().String(), fleet: fleet}
}

func query(qname string, qtype uint16, subnet netip.Prefix) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	if subnet.IsValid() {
		m.SetEdns0(1232, false)
		family, addr := uint16(1), subnet.Addr().AsSlice()
		if subnet.Addr().Is6() {
			family = 2
		}
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{
			Code: dns.EDNS0SUBNET, Family: family, SourceNetmask: uint8(subnet.Bits()), Address: addr,
		})
	}
	return m
}

func exchange(t *testing.T, net, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: net, Timeout: 10 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange: %v", net, err)
	}
	if r.Id != m.Id {
		t.Fatalf("id mismatch")
	}
	return r
}

func addrs(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		}
	}
	return out
}

func TestAnswersFollowClientSubnet(t *testing.T) {
	s := start(t, 1)
	cases := []struct {
		subnet netip.Prefix
		qtype  uint16
		want   string
		scope  uint8
	}{
		{netip.PrefixFrom(demodb.Tokyo.Networks[0].Addr(), 24), dns.TypeA, "198.51.100.1", 24},
		{netip.PrefixFrom(demodb.Virginia.Networks[0].Addr(), 20), dns.TypeA, "198.51.100.3", 20},
		{netip.PrefixFrom(demodb.Frankfurt.Networks[0].Addr(), 24), dns.TypeA, "198.51.100.2", 24},
		{netip.PrefixFrom(demodb.Tokyo.Networks[1].Addr(), 56), dns.TypeAAAA, "2001:db8:1::1", 48},
	}
	for _, c := range cases {
		for _, transport := range []string{"udp", "tcp"} {
			addr := s.udp
			if transport == "tcp" {
				addr = s.tcp
			}
			r := exchange(t, transport, addr, query(name, c.qtype, c.subnet))
			got := addrs(r)
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(got) != 1 || got[0] != c.want {
				t.Errorf("%s %s: rcode %d answer %v", transport, c.subnet, r.Rcode, got)
				continue
			}
			if ttl := r.Answer[0].Header().Ttl; ttl != 20 {
				t.Errorf("ttl %d", ttl)
			}
			var echoed *dns.EDNS0_SUBNET
			for _, o := range r.IsEdns0().Option {
				echoed, _ = o.(*dns.EDNS0_SUBNET)
			}
			if echoed == nil || echoed.SourceScope != c.scope || echoed.SourceNetmask != uint8(c.subnet.Bits()) {
				t.Errorf("%s: ECS echo %v", c.subnet, echoed)
			}
		}
	}
	// Without a subnet the resolver's own address decides: loopback is
	// unknown, so this node answers.
	if got := addrs(exchange(t, "udp", s.udp, query("EDGE.Example.NET.", dns.TypeA, netip.Prefix{}))); len(got) != 1 || got[0] != "198.51.100.2" {
		t.Errorf("no ECS: %v", got)
	}
	// iad has no IPv6 address: the next node that has one answers.
	if got := addrs(exchange(t, "udp", s.udp, query(name, dns.TypeAAAA, netip.PrefixFrom(demodb.Virginia.Networks[1].Addr(), 48)))); len(got) != 1 || got[0] != "2001:db8:2::1" {
		t.Errorf("AAAA fallback: %v", got)
	}
	// A dead node leaves the answers.
	s.fleet.Update("tyo", func(n *geo.Node) { n.Alive = false })
	if got := addrs(exchange(t, "udp", s.udp, query(name, dns.TypeA, netip.PrefixFrom(demodb.Tokyo.Networks[0].Addr(), 24)))); len(got) != 1 || got[0] == "198.51.100.1" {
		t.Errorf("dead node answered: %v", got)
	}
}

func TestSeveralNodesPerAnswer(t *testing.T) {
	s := start(t, 2)
	got := addrs(exchange(t, "udp", s.udp, query(name, dns.TypeA, netip.PrefixFrom(demodb.Tokyo.Networks[0].Addr(), 24))))
	if len(got) != 2 || got[0] != "198.51.100.1" {
		t.Fatalf("%v", got)
	}
}

func TestErrorRcodes(t *testing.T) {
	s := start(t, 1)
	rcode := func(m *dns.Msg) int { return exchange(t, "udp", s.udp, m).Rcode }

	if rc := rcode(query("other.example.net.", dns.TypeA, netip.Prefix{})); rc != dns.RcodeRefused {
		t.Errorf("unknown name: %s", dns.RcodeToString[rc])
	}
	chaos := query(name, dns.TypeA, netip.Prefix{})
	chaos.Question[0].Qclass = dns.ClassCHAOS
	if rc := rcode(chaos); rc != dns.RcodeRefused {
		t.Errorf("chaos class: %s", dns.RcodeToString[rc])
	}
	r := exchange(t, "udp", s.udp, query(name, dns.TypeMX, netip.Prefix{}))
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
		t.Errorf("MX should be NODATA with SOA: %v", r)
	}
	notify := query(name, dns.TypeSOA, netip.Prefix{})
	notify.Opcode = dns.OpcodeNotify
	if rc := rcode(notify); rc != dns.RcodeNotImplemented {
		t.Errorf("notify: %s", dns.RcodeToString[rc])
	}
	update := query(name, dns.TypeA, netip.Prefix{})
	update.Opcode = dns.OpcodeUpdate
	if rc := rcode(update); rc != dns.RcodeNotImplemented {
		t.Errorf("update: %s", dns.RcodeToString[rc])
	}
	two := query(name, dns.TypeA, netip.Prefix{})
	two.Question = append(two.Question, two.Question[0])
	if rc := rcode(two); rc != dns.RcodeFormatError {
		t.Errorf("two questions: %s", dns.RcodeToString[rc])
	}
	// Host bits set beyond the source prefix (RFC 7871 section 6): the
	// library masks them when packing, so flip one in the wire form.
	dirty, err := query(name, dns.TypeA, netip.MustParsePrefix("1.0.16.0/20")).Pack()
	if err != nil {
		t.Fatal(err)
	}
	dirty[len(dirty)-1] |= 0x01
	if rc := raw(t, "udp", s.udp, dirty); rc != dns.RcodeFormatError {
		t.Errorf("dirty ECS: %s", dns.RcodeToString[rc])
	}
	// RFC 7871 section 7.1.1: more than one ECS option is FORMERR; taking
	// the first would let a resolver and the server read different ones.
	twoECS := query(name, dns.TypeA, netip.MustParsePrefix("1.0.16.0/24"))
	twoECS.IsEdns0().Option = append(twoECS.IsEdns0().Option, twoECS.IsEdns0().Option[0])
	if rc := rcode(twoECS); rc != dns.RcodeFormatError {
		t.Errorf("two ECS options: %s", dns.RcodeToString[rc])
	}
	badVers := query(name, dns.TypeA, netip.Prefix{})
	badVers.SetEdns0(1232, false)
	badVers.IsEdns0().SetVersion(1)
	if r := exchange(t, "udp", s.udp, badVers); r.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: %s", dns.RcodeToString[r.Rcode])
	}
}

// held is a TCP connection to addr, closed when the test ends.
func held(t *testing.T, d *net.Dialer, addr string) net.Conn {
	t.Helper()
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// framed is m packed for TCP, after its two-byte length.
func framed(t *testing.T, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

// raw sends bytes as they are and returns the reply's rcode.
func raw(t *testing.T, transport, addr string, b []byte) int {
	t.Helper()
	c, err := net.Dial(transport, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if transport == "tcp" {
		b = append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("%s: no reply: %v", transport, err)
	}
	buf = buf[:n]
	if transport == "tcp" {
		buf = buf[2:]
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf); err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return m.Rcode
}

func TestMalformedAndOversizedQueries(t *testing.T) {
	s := start(t, 1)
	good, err := query(name, dns.TypeA, netip.Prefix{}).Pack()
	if err != nil {
		t.Fatal(err)
	}
	// A valid header announcing one question, followed by junk.
	junk := append(append([]byte(nil), good[:12]...), 0xc0, 0xff, 0xff, 0xff)
	for _, transport := range []string{"udp", "tcp"} {
		addr := map[string]string{"udp": s.udp, "tcp": s.tcp}[transport]
		if rc := raw(t, transport, addr, junk); rc != dns.RcodeFormatError {
			t.Errorf("%s junk: %s", transport, dns.RcodeToString[rc])
		}
	}
	// A well-formed query padded far beyond any real one.
	big := query(name, dns.TypeA, netip.Prefix{})
	big.SetEdns0(4096, false)
	big.IsEdns0().Option = append(big.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 1500)})
	b, err := big.Pack()
	if err != nil {
		t.Fatal(err)
	}
	for _, transport := range []string{"udp", "tcp"} {
		addr := map[string]string{"udp": s.udp, "tcp": s.tcp}[transport]
		if rc := raw(t, transport, addr, b); rc != dns.RcodeFormatError {
			t.Errorf("%s oversized: %s", transport, dns.RcodeToString[rc])
		}
	}
	// The server still answers afterwards.
	if got := addrs(exchange(t, "udp", s.udp, query(name, dns.TypeA, netip.Prefix{}))); len(got) != 1 {
		t.Errorf("after bad input: %v", got)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, bad := range []string{"no-dot", "edge..example.net.", strings.Repeat("a", 64) + ".example.net.", strings.Repeat("a.", 128)} {
		if _, err := geodns.NewHandler(geo.DNSConfig{Listen: "127.0.0.1:53", Names: []string{bad}}, nil, nil); err == nil {
			t.Errorf("name %q accepted: no query can ask for it", bad)
		}
	}
	err := geodns.ServeDNS(context.Background(), geo.DNSConfig{Listen: "203.0.113.1:53", Names: []string{name}}, nil, nil)
	if err == nil {
		t.Error("listening on a foreign address succeeded")
	}
}

// A name may be up to 255 octets on the wire. A negative answer carries
// an SOA whose mailbox is hostmaster.<name>: for a name over 243 octets
// that is no domain name, and a resolver cannot read the reply at all.
func TestLongestNamesGetReadableAnswers(t *testing.T) {
	long := strings.Repeat(strings.Repeat("a", 60)+".", 3) + strings.Repeat("b", 56) + ".example.net."
	s := startFleet(t, 1, "fra", []geo.Node{fleetNode("fra", demodb.Frankfurt, "198.51.100.2")}, long)
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeMX} {
		for _, transport := range []string{"udp", "tcp"} {
			r := exchange(t, transport, map[string]string{"udp": s.udp, "tcp": s.tcp}[transport], query(long, qtype, netip.Prefix{}))
			if r.Rcode != dns.RcodeSuccess || len(r.Answer)+len(r.Ns) != 1 {
				t.Errorf("%s %s: %v", transport, dns.TypeToString[qtype], r)
			}
		}
	}
}

// recorder is a dns.ResponseWriter keeping the reply, for the fuzz target.
type recorder struct {
	dns.ResponseWriter
	msg *dns.Msg
}

func (r *recorder) RemoteAddr() net.Addr      { return &net.UDPAddr{IP: net.IPv4(85, 214, 0, 9), Port: 53} }
func (r *recorder) WriteMsg(m *dns.Msg) error { r.msg = m; return nil }

func FuzzServeDNS(f *testing.F) {
	for _, m := range []*dns.Msg{
		query(name, dns.TypeA, netip.PrefixFrom(demodb.Tokyo.Networks[0].Addr(), 24)),
		query(name, dns.TypeAAAA, netip.PrefixFrom(demodb.Tokyo.Networks[1].Addr(), 48)),
		query("x.", dns.TypeMX, netip.Prefix{}),
	} {
		b, _ := m.Pack()
		f.Add(b)
	}
	path := filepath.Join(f.TempDir(), "city.mmdb")
	if err := demodb.Write(path); err != nil {
		f.Fatal(err)
	}
	db, err := geoip.Open(path, nil)
	if err != nil {
		f.Fatal(err)
	}
	fleet, _ := geo.NewStaticFleet("fra", []geo.Node{fleetNode("fra", demodb.Frankfurt, "198.51.100.2")})
	// Every query answered; and every one past the first truncated (the
	// rate limit's reply), which must be as well formed.
	router := geo.NewRouter(geo.RouterConfig{}, db, fleet, nil)
	var handlers []*geodns.Handler
	for _, limit := range []geo.DNSRateLimit{{PerSecond: -1}, {PerSecond: 1, Slip: 1}} {
		h, err := geodns.NewHandler(geo.DNSConfig{Listen: "127.0.0.1:0", Names: []string{name}, RateLimit: limit}, router, nil)
		if err != nil {
			f.Fatal(err)
		}
		handlers = append(handlers, h)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(dns.Msg)
		if req.Unpack(b) != nil {
			return // the server answers those itself, tested above
		}
		for _, h := range handlers {
			w := &recorder{}
			h.ServeDNS(w, req)
			if w.msg == nil || w.msg.Id != req.Id || !w.msg.Response {
				t.Fatalf("bad reply %v to %v", w.msg, req)
			}
			// What packs may still be unreadable (a name over 255 octets).
			b, err := w.msg.Pack()
			if err != nil {
				t.Fatalf("reply does not pack: %v", err)
			}
			if err := new(dns.Msg).Unpack(b); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
		}
	})
}

// Each TCP connection costs a goroutine, a descriptor and, while a query
// is being read, a buffer of the length its first two bytes announce (up
// to 64 KiB). Clients that open many connections and leave a long query
// unfinished must not grow the node's heap, or use up the descriptors its
// HTTP listeners need, in proportion to how many they open.
func TestTCPConnectionsAreBounded(t *testing.T) {
	s := start(t, 1)
	q := framed(t, query(name, dns.TypeA, netip.Prefix{}))
	const conns = 2000
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	held := make(chan net.Conn, conns)
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", s.tcp)
			if err != nil {
				return
			}
			held <- c
			// One query answered makes the server wait its idle timeout
			// (8 s) for the next, then a length of 65535 and one byte.
			c.SetDeadline(time.Now().Add(time.Second))
			c.Write(q)
			c.Read(make([]byte, 512))
			c.SetDeadline(time.Time{})
			c.Write([]byte{0xff, 0xff, 0})
		}()
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // for the last reads to start
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	close(held)
	opened := 0
	for c := range held {
		c.Close()
		opened++
	}
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d connections left reading a 64 KiB query: heap grew %d MiB", opened, grew>>20)
	if grew > 32<<20 {
		t.Errorf("heap grew %d MiB with %d connections held open", grew>>20, opened)
	}
	if got := addrs(exchange(t, "tcp", s.tcp, query(name, dns.TypeA, netip.Prefix{}))); len(got) != 1 {
		t.Errorf("TCP after the connections closed: %v", got)
	}
}

// One host that opens every TCP slot, and keeps each with a query answered
// (the server then waits its 8 s idle timeout for the next), must not
// leave other resolvers' TCP queries waiting behind it in the backlog.
func TestOneHostCannotHoldEveryTCPSlot(t *testing.T) {
	s := start(t, 1)
	q := framed(t, query(name, dns.TypeA, netip.Prefix{}))
	// The hog sends from 127.0.0.3, the resolver from 127.0.0.1.
	hog := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		answered int
		conns    []net.Conn
	)
	for range 128 {
		c, err := hog.Dial("tcp", s.tcp)
		if err != nil {
			continue // reset before the dial returned
		}
		conns = append(conns, c)
		wg.Go(func() {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			c.Write(q)
			if _, err := c.Read(make([]byte, 512)); err == nil {
				mu.Lock()
				answered++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	t.Logf("%d of the hog's 128 connections served", answered)
	if answered > 16 {
		t.Errorf("one address was served on %d connections at once, want at most 16", answered)
	}
	c := &dns.Client{Net: "tcp", Timeout: 4 * time.Second}
	if _, _, err := c.Exchange(query(name, dns.TypeA, netip.Prefix{}), s.tcp); err != nil {
		t.Errorf("a resolver's TCP query while one host holds its connections: %v", err)
	}
}

// An answer over UDP stays within 1232 bytes whatever the resolver
// announces (DNS Flag Day 2020): a larger datagram is fragmented on the
// way, and forged fragments are how an off-path attacker poisons a
// resolver's cache. What does not fit is truncated; TCP carries it whole.
func TestUDPAnswersAreNeverFragmented(t *testing.T) {
	s := eightNodes(t, 8)
	q := query(name, dns.TypeAAAA, netip.Prefix{})
	q.SetEdns0(4096, false)
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", s.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	r := new(dns.Msg)
	if err := r.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if n > 1232 || !r.Truncated {
		t.Errorf("UDP answer of %d bytes, truncated %v: want at most 1232, truncated", n, r.Truncated)
	}
	if opt := r.IsEdns0(); opt == nil || opt.UDPSize() != 1232 {
		t.Errorf("answer's OPT announces %v, want 1232", opt)
	}
	if got := addrs(exchange(t, "tcp", s.tcp, q)); len(got) != 64 {
		t.Errorf("TCP answer holds %d addresses, want 64", len(got))
	}
}

// eightNodes runs a server for eight nodes of perNode IPv6 addresses
// each, all of them in every AAAA answer.
func eightNodes(t *testing.T, perNode int) server {
	t.Helper()
	var nodes []geo.Node
	for i := range 8 {
		var addrs []string
		for j := range perNode {
			addrs = append(addrs, fmt.Sprintf("2001:db8:%d::%d", i+1, j+1))
		}
		nodes = append(nodes, fleetNode(fmt.Sprintf("n%d", i), demodb.Frankfurt, addrs...))
	}
	return startFleet(t, 8, "n0", nodes)
}

// A client that pipelines queries over TCP and never reads the answers
// fills its receive window and the server's send buffer; the server's
// write then blocked forever (miekg/dns sets no write deadline on TCP), so
// the connection, its goroutine and its slot were held for good. With 16
// such connections one address was locked out of TCP for as long as it
// liked, and eight addresses would hold all 128 slots.
func TestTCPClientThatNeverReadsIsDropped(t *testing.T) {
	s := eightNodes(t, 64) // an AAAA answer of 22 KiB: a few fill a window
	q := framed(t, query(name, dns.TypeAAAA, netip.Prefix{}))
	pipelined := bytes.Repeat(q, 128) // the most one connection is served
	hog := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 4)},
		// A small window, set before the handshake announces it.
		Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		},
	}
	for range 16 {
		c := held(t, &hog, s.tcp)
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(pipelined); err != nil {
			t.Fatal(err)
		}
	}
	// Once the stalled writes time out, all 16 slots are free again for
	// the same address.
	again := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 4)}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			answered int
			lastErr  error
		)
		for range 16 {
			wg.Go(func() {
				c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second, Dialer: &again}
				r, _, err := c.Exchange(query(name, dns.TypeAAAA, netip.Prefix{}), s.tcp)
				mu.Lock()
				defer mu.Unlock()
				if err == nil && len(addrs(r)) == 8*64 {
					answered++
				} else {
					lastErr = err
				}
			})
		}
		wg.Wait()
		if answered == 16 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20 s after 16 connections stopped reading, their address is served on %d of 16: %v", answered, lastErr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Any resolver may name any client subnet (and over UDP any source
// address), and each new network named took a slot in the router's memory
// of answers, evicting another's: one host naming a few thousand networks
// flushed the answers remembered for everyone, and every client then
// moved at the next small change. A namer may add only a few networks per
// window, and all namers together a bounded share of the memory.
func TestNamedNetworksCannotFlushRememberedAnswers(t *testing.T) {
	far := demodb.City{Lat: demodb.Tokyo.Lat + 10, Lon: demodb.Tokyo.Lon}
	s := startRouter(t, geo.RouterConfig{StickyEntries: 512}, 1, "c", []geo.Node{
		fleetNode("a", far, "198.51.100.1"),
		fleetNode("b", demodb.Tokyo, "198.51.100.2"),
		fleetNode("c", demodb.Frankfurt, "198.51.100.3"),
	})
	ask := func(from netip.Addr, subnet netip.Prefix) []string {
		t.Helper()
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: from.AsSlice()}}}
		r, _, err := c.Exchange(query(name, dns.TypeA, subnet), s.udp)
		if err != nil {
			t.Fatalf("from %s for %s: %v", from, subnet, err)
		}
		return addrs(r)
	}
	resolver := netip.MustParseAddr("127.0.0.1")
	n, m := netip.MustParsePrefix("1.0.16.0/24"), netip.MustParsePrefix("1.0.17.0/24")
	if got := ask(resolver, n); len(got) != 1 || got[0] != "198.51.100.2" {
		t.Fatalf("Tokyo's network: %v", got)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	// One host names thousands of networks...
	hog := netip.MustParseAddr("127.0.0.5")
	for i := range 2500 {
		ask(hog, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24))
	}
	// ...which leaves room for another resolver's new network...
	if got := ask(netip.MustParseAddr("127.0.0.9"), m); len(got) != 1 || got[0] != "198.51.100.2" {
		t.Fatalf("Tokyo's other network: %v", got)
	}
	// ...and so do thousands of hosts naming one each (forged UDP sources).
	for i := range 2800 {
		from := netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)})
		ask(from, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>8), byte(i), 0}), 24))
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("heap after naming 5,300 networks from 2,801 hosts: %+d KiB", (int64(after.HeapAlloc)-int64(before.HeapAlloc))>>10)
	// Node a is now as good as b for Tokyo, and first by ID: a network
	// still remembered stays with b.
	s.fleet.Update("a", func(n *geo.Node) { n.Lat, n.Lon = demodb.Tokyo.Lat, demodb.Tokyo.Lon })
	for _, p := range []netip.Prefix{n, m} {
		if got := ask(resolver, p); len(got) != 1 || got[0] != "198.51.100.2" {
			t.Errorf("%s: answered %v, want its remembered 198.51.100.2", p, got)
		}
	}
	// A network not remembered goes to a.
	if got := ask(resolver, netip.MustParsePrefix("1.0.18.0/24")); len(got) != 1 || got[0] != "198.51.100.1" {
		t.Errorf("a new Tokyo network: %v, want 198.51.100.1", got)
	}
}

// A node may be configured with any number of addresses. An answer over
// TCP that passed 64 KiB uncompressed did not pack, and the resolver got
// no reply at all, only its own timeout: answers are compressed when that
// is needed, and cut to what fits.
func TestTCPAnswersPastSixtyFourKiBStillGo(t *testing.T) {
	for _, perNode := range []int{200, 400} { // 70 KiB uncompressed; 90 KiB compressed
		s := eightNodes(t, perNode)
		r := exchange(t, "tcp", s.tcp, query(name, dns.TypeAAAA, netip.Prefix{}))
		got := len(addrs(r))
		t.Logf("%d addresses: %d answered, truncated %v", 8*perNode, got, r.Truncated)
		if got == 0 || got == 8*perNode == r.Truncated {
			t.Errorf("%d addresses: %d answered, truncated %v", 8*perNode, got, r.Truncated)
		}
	}
}

// miekg/dns starts a goroutine for each datagram it reads. A flood of
// queries faster than their answers grew the goroutines and the heap
// without bound (7,000 goroutines and 44 MiB within three seconds of
// eight senders); the datagrams past a bound now wait in the socket's
// buffer, and past that are dropped, as UDP may be. Each kind of
// datagram the library turns away without an answer gives its slot back.
func TestUDPFloodIsAnsweredWithinBoundedWork(t *testing.T) {
	s := eightNodes(t, 64) // an answer that takes some work to cut to 1232 bytes
	q, err := query(name, dns.TypeAAAA, netip.Prefix{}).Pack()
	if err != nil {
		t.Fatal(err)
	}
	response := append([]byte(nil), q...)
	response[2] |= 0x80 // QR: the library ignores it
	notify := append([]byte(nil), q...)
	notify[2] |= 0x20 // opcode 4 is NOTIFY, 5 (UPDATE) is refused by the library
	notify[2] |= 0x08
	junk := append(append([]byte(nil), q[:12]...), 0xc0, 0xff)
	for _, b := range [][]byte{q[:5], response, notify, junk} {
		c, err := net.Dial("udp", s.udp)
		if err != nil {
			t.Fatal(err)
		}
		// Three rounds of 100, each within the socket's buffer: the answer
		// after each says the server read them all.
		for range 3 {
			for range 100 {
				c.Write(b)
			}
			if r := retried(t, s.udp); !r.Truncated {
				t.Fatalf("after datagrams turned away: %v", r)
			}
		}
		c.Close()
	}

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	baseline := runtime.NumGoroutine()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c, err := net.Dial("udp", s.udp)
			if err != nil {
				return
			}
			defer c.Close()
			for {
				select {
				case <-stop:
					return
				default:
					c.Write(q)
				}
			}
		})
	}
	peak, peakHeap := 0, uint64(0)
	for range 20 {
		time.Sleep(100 * time.Millisecond)
		peak = max(peak, runtime.NumGoroutine()-baseline-8)
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peakHeap = max(peakHeap, m.HeapAlloc)
	}
	close(stop)
	wg.Wait()
	grew := int64(peakHeap) - int64(before.HeapAlloc)
	t.Logf("under a flood from 8 senders: %d more goroutines at most, heap %+d MiB at most", peak, grew>>20)
	if peak > 256 {
		t.Errorf("a UDP flood ran %d goroutines at once", peak)
	}
	if r := retried(t, s.udp); !r.Truncated {
		t.Errorf("after the flood: %v", r)
	}
}

// retried asks for the AAAA records over UDP as a resolver does: again
// after a second without an answer, for datagrams dropped while a burst
// filled the socket's buffer.
func retried(t *testing.T, addr string) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	var err error
	for range 10 {
		var r *dns.Msg
		if r, _, err = c.Exchange(query(name, dns.TypeAAAA, netip.Prefix{}), addr); err == nil {
			return r
		}
	}
	t.Fatalf("no answer in 10 tries: %v", err)
	return nil
}

// Each wait for a datagram that ends empty gives its slot back: with one
// held per wait, an idle server stopped answering UDP after 128 waits of
// the library's 2 s, four minutes.
func TestIdleUDPKeepsItsSlots(t *testing.T) {
	old := geodns.SetUDPReadTimeout(time.Millisecond)
	t.Cleanup(func() { geodns.SetUDPReadTimeout(old) }) // after the server's, which waits for it to stop
	s := eightNodes(t, 1)
	time.Sleep(time.Second) // hundreds of empty waits
	if r := retried(t, s.udp); len(addrs(r)) != 8 {
		t.Errorf("after an idle second: %v", r)
	}
}

// Eight hosts that each open their 16 TCP connections, and keep each with
// a query answered now and then (the server waits 8 s for the next),
// held all 128 slots: every other resolver was reset as it connected, for
// as long as the hosts kept it up. When the listener is full, the
// connection idle longest is closed to make room.
func TestFewHostsCannotHoldEveryTCPSlot(t *testing.T) {
	s := start(t, 1)
	q := framed(t, query(name, dns.TypeA, netip.Prefix{}))
	for host := range 8 {
		hog := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(host+1))}}
		for range 16 {
			c := held(t, &hog, s.tcp)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write(q)
			c.Read(make([]byte, 512))
		}
	}
	c := &dns.Client{Net: "tcp", Timeout: 4 * time.Second}
	for i := range 3 {
		if _, _, err := c.Exchange(query(name, dns.TypeA, netip.Prefix{}), s.tcp); err != nil {
			t.Errorf("resolver's TCP query %d while eight hosts hold 128 connections: %v", i, err)
		}
	}
}

// Over UDP a query's source is whatever its sender wrote: a flood "from"
// a victim would have each small query answered with up to 1232 bytes.
// One network gets its rate of answers; past it every second one goes
// out empty with TC set (a real resolver retries over TCP), no bigger
// than the query, and the rest are not sent. Another network is answered
// as before.
func TestAnswersToOneNetworkAreRateLimited(t *testing.T) {
	const rate, sent = 100, 3000
	nodes := []geo.Node{fleetNode("fra", demodb.Frankfurt, "198.51.100.2", "2001:db8:2::1")}
	s := startDNS(t, geo.DNSConfig{Listen: "127.0.0.1:0", Names: []string{name}, RateLimit: geo.DNSRateLimit{PerSecond: rate, Slip: 2}},
		geo.RouterConfig{}, "fra", nodes)
	c, err := net.Dial("udp", s.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := query(name, dns.TypeA, netip.Prefix{})
	var full, truncated, biggestTC, queryBytes int
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 2048)
		for {
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			var r dns.Msg
			if err := r.Unpack(buf[:n]); err != nil {
				t.Errorf("an answer does not parse: %v", err)
				return
			}
			if r.Truncated && len(r.Answer) == 0 {
				truncated++
				biggestTC = max(biggestTC, n)
			} else {
				full++
			}
		}
	}()
	start := time.Now()
	for i := range sent {
		q.Id = uint16(i)
		b, _ := q.Pack()
		queryBytes = len(b)
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			time.Sleep(time.Millisecond) // within the socket's buffer
		}
	}
	took := time.Since(start)
	<-read
	// The bucket holds a second's worth, and refills at the rate.
	limit := rate + int(float64(rate)*took.Seconds()) + 1
	t.Logf("%d queries in %v: %d answered, %d truncated (at most %d bytes, the query %d), %d not sent",
		sent, took.Round(time.Millisecond), full, truncated, biggestTC, queryBytes, sent-full-truncated)
	if full > limit {
		t.Fatalf("%d of %d queries from one network answered in %v; the rate allows %d", full, sent, took.Round(time.Millisecond), limit)
	}
	if over := sent - full; truncated < over/2-over/10 || truncated > over/2+over/10 {
		t.Errorf("%d truncated answers of %d over the rate, want about half", truncated, over)
	}
	if biggestTC > queryBytes {
		t.Errorf("a truncated answer of %d bytes to a query of %d: it amplifies", biggestTC, queryBytes)
	}
	other := &dns.Client{Net: "udp", Timeout: 5 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("127.0.1.1")}}}
	r, _, err := other.Exchange(query(name, dns.TypeA, netip.Prefix{}), s.udp)
	if err != nil || r.Truncated || len(r.Answer) == 0 {
		t.Fatalf("another network during the flood: %v, %v", r, err)
	}
}

// Eight hosts that keep their 16 TCP connections each busy, a query every
// 20 ms on each, and open another whenever one is closed, filled the
// listener with connections never idle long: closing the one idle longest
// then closed a resolver's a moment after its first answer. A host holds
// at most 16 (the per-address bound), and a full listener closes
// a connection of the address holding the most, so a resolver with one
// keeps it while the busy hosts take each other's.
func TestBusyHostsCannotTakeAResolversTCPConnection(t *testing.T) {
	s := start(t, 1)
	q := framed(t, query(name, dns.TypeA, netip.Prefix{}))
	stop := make(chan struct{})
	var redials atomic.Int64
	defer func() { t.Logf("the hosts opened %d more connections", redials.Load()) }()
	var hogs sync.WaitGroup
	defer hogs.Wait()
	defer close(stop)
	for host := range 8 {
		hog := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, byte(host+1))}}
		for range 16 {
			hogs.Go(func() {
				buf := make([]byte, 512)
				for {
					c, err := hog.Dial("tcp", s.tcp)
					for err == nil {
						select {
						case <-stop:
							c.Close()
							return
						case <-time.After(20 * time.Millisecond):
						}
						c.SetDeadline(time.Now().Add(2 * time.Second))
						if _, err = c.Write(q); err == nil {
							_, err = c.Read(buf)
						}
					}
					if c != nil {
						c.Close()
					}
					redials.Add(1)
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
				}
			})
		}
	}
	time.Sleep(500 * time.Millisecond) // for the hosts to fill the listener
	conn, err := net.DialTimeout("tcp", s.tcp, 4*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &dns.Conn{Conn: conn}
	for i := range 2 {
		conn.SetDeadline(time.Now().Add(4 * time.Second))
		err := c.WriteMsg(query(name, dns.TypeA, netip.Prefix{}))
		if err == nil {
			_, err = c.ReadMsg()
		}
		if err != nil {
			t.Fatalf("resolver's query %d on its one connection while eight hosts keep 128 busy: %v", i+1, err)
		}
		time.Sleep(time.Second) // idle, while the hosts are not
	}
}
