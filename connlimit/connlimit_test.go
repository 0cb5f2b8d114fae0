package connlimit

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func tcpAddr(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

func TestKey(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{tcpAddr("192.0.2.1:443"), "192.0.2.1/32"},
		{tcpAddr("[::ffff:192.0.2.1]:443"), "192.0.2.1/32"},
		{tcpAddr("[2001:db8:1:2:3:4:5:6]:443"), "2001:db8:1:2::/64"},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::1"), Port: 1, Zone: "eth0"}, "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "/tmp/s", Net: "unix"}, "invalid Prefix"},
		{nil, "invalid Prefix"},
	} {
		if got := Key(c.addr).String(); got != c.want {
			t.Errorf("Key(%v) = %s, want %s", c.addr, got, c.want)
		}
	}
}

func TestSettingsValidate(t *testing.T) {
	var s Settings
	s.SetDefaults()
	if err := s.Validate(); err != nil || s.MaxTotal != DefaultMaxTotal || s.MaxPerAddress != DefaultMaxPerAddress {
		t.Fatalf("defaults %+v: %v", s, err)
	}
	err := Settings{MaxTotal: -1, MaxPerAddress: 2 << 20}.Validate()
	for _, want := range []string{"max_total: max_total must be 1..", "max_per_address: max_per_address must be 1.."} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
	if err := (Settings{MaxTotal: 4, MaxPerAddress: 8}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "max_per_address: ") {
		t.Errorf("per address over total: %v", err)
	}
}

// Past an address's bound its next connection is refused, while other
// addresses, the IPv6 host's own /64 aside, still get theirs; a release
// frees the slot once, however often it is called.
func TestAcquirePerAddressAndTotal(t *testing.T) {
	l := New("test", Settings{MaxTotal: 6, MaxPerAddress: 2}, nil)
	a, b := tcpAddr("192.0.2.1:1"), tcpAddr("192.0.2.2:1")
	v6a, v6b := tcpAddr("[2001:db8::1]:1"), tcpAddr("[2001:db8::ffff:2]:1")
	mustAcquire := func(addr net.Addr) func() {
		t.Helper()
		r, err := l.Acquire(addr)
		if err != nil {
			t.Fatalf("%v: %v", addr, err)
		}
		return r
	}
	ra := mustAcquire(a)
	mustAcquire(a)
	if _, err := l.Acquire(a); !errors.Is(err, ErrPerAddress) {
		t.Fatalf("third from one address: %v", err)
	}
	mustAcquire(b)
	mustAcquire(v6a)
	if _, err := l.Acquire(v6b); err != nil {
		t.Fatalf("second from one /64: %v", err)
	}
	if _, err := l.Acquire(tcpAddr("[2001:db8::3]:1")); !errors.Is(err, ErrPerAddress) {
		t.Fatalf("third from one /64: %v", err)
	}
	mustAcquire(tcpAddr("192.0.2.9:1"))
	if _, err := l.Acquire(tcpAddr("192.0.2.10:1")); !errors.Is(err, ErrTotal) {
		t.Fatalf("seventh in all: %v", err)
	}
	ra()
	ra()
	if st := l.Stats(); st.Open != 5 || st.RefusedPerAddress != 2 || st.RefusedTotal != 1 {
		t.Fatalf("stats after one release (twice): %+v", st)
	}
	mustAcquire(a)
	if st := l.Stats(); st.Open != 6 {
		t.Fatalf("a release counted twice: %d open", st.Open)
	}
}

// A lowered bound keeps what is held and refuses what comes next; a
// raised one takes more at once.
func TestSetAppliesToNewConnections(t *testing.T) {
	l := New("test", Settings{MaxTotal: 10, MaxPerAddress: 3}, nil)
	a := tcpAddr("192.0.2.1:1")
	var rel []func()
	for range 3 {
		r, err := l.Acquire(a)
		if err != nil {
			t.Fatal(err)
		}
		rel = append(rel, r)
	}
	l.Set(Settings{MaxTotal: 10, MaxPerAddress: 1})
	if st := l.Stats(); st.Open != 3 {
		t.Fatalf("held after lowering: %d", st.Open)
	}
	rel[0]()
	if _, err := l.Acquire(a); !errors.Is(err, ErrPerAddress) {
		t.Fatalf("over a lowered bound: %v", err)
	}
	l.Set(Settings{MaxTotal: 10, MaxPerAddress: 4})
	if _, err := l.Acquire(a); err != nil {
		t.Fatalf("under a raised bound: %v", err)
	}
}

// Concurrent acquires never hold more than the bounds, and every release
// brings the count back to zero (run with -race).
func TestAcquireConcurrent(t *testing.T) {
	const perAddr, total = 8, 20
	l := New("test", Settings{MaxTotal: total, MaxPerAddress: perAddr}, nil)
	var mu sync.Mutex
	held := map[netip.Prefix]int{}
	all, peak := 0, 0
	var wg sync.WaitGroup
	for g := range 16 {
		addr := tcpAddr(netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(g % 4)}), 1).String())
		wg.Go(func() {
			for range 500 {
				r, err := l.Acquire(addr)
				if err != nil {
					continue
				}
				mu.Lock()
				held[Key(addr)]++
				all++
				if held[Key(addr)] > perAddr || all > total {
					t.Errorf("held %d from %v, %d in all", held[Key(addr)], addr, all)
				}
				peak = max(peak, all)
				held[Key(addr)]--
				all--
				mu.Unlock()
				r()
			}
		})
	}
	wg.Wait()
	if st := l.Stats(); st.Open != 0 {
		t.Fatalf("open after every release: %d", st.Open)
	}
	if peak == 0 {
		t.Fatal("nothing was ever held")
	}
}

// A flood of refusals logs one line per logEvery, which counts them.
func TestRefusalsLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	l := New("https", Settings{MaxTotal: 1, MaxPerAddress: 1}, slog.New(slog.NewTextHandler(&buf, nil)))
	a := tcpAddr("192.0.2.1:1")
	if _, err := l.Acquire(a); err != nil {
		t.Fatal(err)
	}
	for range 10000 {
		l.Acquire(a)
	}
	if lines := strings.Count(buf.String(), "\n"); lines != 1 {
		t.Fatalf("%d log lines for a flood:\n%s", lines, buf.String())
	}
	if !strings.Contains(buf.String(), "listener=https refused=1 ") {
		t.Fatalf("log line: %s", buf.String())
	}
	// The next line, once due, counts what the quiet period held back.
	l.lastLog.Store(time.Now().Add(-logEvery).UnixNano())
	l.Acquire(a)
	if !strings.Contains(buf.String(), "refused=10000 ") {
		t.Fatalf("second line: %s", buf.String())
	}
}

// Over its bound, a TCP connection is reset before the server reads
// anything; the others are served; a closed one frees its slot, once.
func TestListenRefusesAtOnce(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New("test", Settings{MaxTotal: 10, MaxPerAddress: 2}, nil)
	ln := Listen(inner, l)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c1, c2 := dial(), dial()
	s1, s2 := <-accepted, <-accepted
	// The third is reset: its read ends at once, with no byte, unless the
	// reset came in time to fail the connect itself.
	if c3, err := net.Dial("tcp", inner.Addr().String()); err == nil {
		defer c3.Close()
		c3.SetReadDeadline(time.Now().Add(30 * time.Second))
		if n, err := c3.Read(make([]byte, 1)); n != 0 || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("refused connection read %d, %v; want a reset", n, err)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("refused connection: %v; want a reset", err)
	}
	// The held ones still carry bytes both ways.
	for _, p := range [][2]net.Conn{{c1, s1}, {c2, s2}} {
		if _, err := p[0].Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p[1], make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	s1.Close()
	s1.Close()
	if got := l.Stats().Open; got != 1 {
		t.Fatalf("open after one closed twice: %d", got)
	}
	dial()
	s4 := <-accepted
	if st := l.Stats(); st.Open != 2 || st.RefusedPerAddress != 1 {
		t.Fatalf("stats: %+v", st)
	}
	if _, ok := s4.(interface{ NetConn() net.Conn }).NetConn().(*net.TCPConn); !ok {
		t.Fatal("NetConn is not the TCP connection")
	}
	if err := s4.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

// Crowded asks for proof of a source address from half a bound on, the
// listener's or the address's.
func TestCrowded(t *testing.T) {
	l := New("test", Settings{MaxTotal: 8, MaxPerAddress: 4}, nil)
	a, b := tcpAddr("192.0.2.1:1"), tcpAddr("192.0.2.2:1")
	for i := range 3 {
		if got, want := l.Crowded(a), i >= 2; got != want {
			t.Fatalf("with %d from a: crowded %v", i, got)
		}
		l.Acquire(a)
	}
	if l.Crowded(b) {
		t.Fatal("b is crowded with 3 of 8 held")
	}
	l.Acquire(b)
	if !l.Crowded(b) {
		t.Fatal("b is not crowded with 4 of 8 held")
	}
}

// A refusal allocates nothing, so a flood of them costs no garbage.
func TestRefusalAllocatesNothing(t *testing.T) {
	l := New("test", Settings{MaxTotal: 1, MaxPerAddress: 1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a := tcpAddr("192.0.2.1:1")
	l.Acquire(a)
	l.Acquire(a) // the one log line of the next logEvery
	if n := testing.AllocsPerRun(1000, func() { l.Acquire(a) }); n != 0 {
		t.Fatalf("%v allocations per refusal", n)
	}
}

// AcquireIP counts against the same keys as Acquire (an IPv4-mapped
// address is its IPv4, an IPv6 address its /64), and Release frees.
func TestAcquireIPAndRelease(t *testing.T) {
	l := New("requests", Settings{MaxTotal: 10, MaxPerAddress: 2}, nil)
	a, err := l.AcquireIP(netip.MustParseAddr("192.0.2.7"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AcquireIP(netip.MustParseAddr("::ffff:192.0.2.7")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AcquireIP(netip.MustParseAddr("192.0.2.7")); !errors.Is(err, ErrPerAddress) {
		t.Fatalf("third from one address: %v, want ErrPerAddress", err)
	}
	if _, err := l.Acquire(&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}); !errors.Is(err, ErrPerAddress) {
		t.Fatalf("Acquire of the same address: %v, want ErrPerAddress", err)
	}
	l.Release(a)
	if _, err := l.AcquireIP(netip.MustParseAddr("192.0.2.7")); err != nil {
		t.Fatalf("after a Release: %v", err)
	}
	for _, ip := range []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff::1"} {
		if _, err := l.AcquireIP(netip.MustParseAddr(ip)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.AcquireIP(netip.MustParseAddr("2001:db8:1:2::99")); !errors.Is(err, ErrPerAddress) {
		t.Fatalf("third from one /64: %v, want ErrPerAddress", err)
	}
	if st := l.Stats(); st.Open != 4 || st.RefusedPerAddress != 3 {
		t.Fatalf("stats %+v, want 4 open, 3 refused", st)
	}
}
