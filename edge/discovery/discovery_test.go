package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"perigee/edge/discovery/dnstest"
	"perigee/units"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const api = "_api._tcp." + dnstest.Domain

var host = []dnstest.Host{{Name: "b." + dnstest.Domain, IP: "127.0.0.1"}, {Name: "v6." + dnstest.Domain, IP: "::1"}}

func cfg(server *dnstest.Server, name string, port int) Config {
	// The test's backends are on loopback, as dnsmasq is.
	c := Config{DNS: name, Port: port, Resolver: server.Addr, Interval: units.Duration(time.Second), EmptyGrace: units.Duration(time.Hour), AllowLoopback: true}
	c.SetDefaults()
	return c
}

func resolve(t *testing.T, c Config) (Answer, error) {
	t.Helper()
	r, err := NewResolver(c.Resolver, c.Timeout.D())
	if err != nil {
		t.Fatal(err)
	}
	return r.Resolve(context.Background(), c)
}

func TestSRVLowestPriorityWithWeights(t *testing.T) {
	srv := dnstest.Start(t, []dnstest.SRV{
		{Name: api, Target: "b." + dnstest.Domain, Port: 9001, Priority: 0, Weight: 10},
		{Name: api, Target: "b." + dnstest.Domain, Port: 9002, Priority: 0, Weight: 30},
		{Name: api, Target: "b." + dnstest.Domain, Port: 9003, Priority: 1, Weight: 10}, // a standby
	}, host)
	a, err := resolve(t, cfg(srv, api, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(a.Endpoints); got != "[{http://127.0.0.1:9001 10} {http://127.0.0.1:9002 30}]" {
		t.Fatalf("endpoints %s", got)
	}
	if a.TTL != time.Second {
		t.Fatalf("ttl %v, want dnsmasq's local-ttl 1s", a.TTL)
	}
}

func TestAAndAAAAWithPort(t *testing.T) {
	srv := dnstest.Start(t, nil, host)
	a, err := resolve(t, cfg(srv, "b."+dnstest.Domain, 8080))
	if err != nil || fmt.Sprint(a.Endpoints) != "[{http://127.0.0.1:8080 1}]" {
		t.Fatalf("A: %v %v", a.Endpoints, err)
	}
	a, err = resolve(t, cfg(srv, "v6."+dnstest.Domain, 8080))
	if err != nil || fmt.Sprint(a.Endpoints) != "[{http://[::1]:8080 1}]" {
		t.Fatalf("AAAA: %v %v", a.Endpoints, err)
	}
}

func TestFailuresAreErrorsAndNoDataIsEmpty(t *testing.T) {
	srv := dnstest.Start(t, nil, host)
	if _, err := resolve(t, cfg(srv, "_nope._tcp."+dnstest.Domain, 0)); err == nil || !strings.Contains(err.Error(), "NXDOMAIN") {
		t.Fatalf("NXDOMAIN: %v", err)
	}
	srv.Restart([]dnstest.SRV{{Name: api}}, host)
	if _, err := resolve(t, cfg(srv, api, 0)); !errors.Is(err, ErrEmpty) {
		t.Fatalf("SRV with target \".\" (service not available): %v, want ErrEmpty", err)
	}
	c := cfg(srv, "b."+dnstest.Domain, 80)
	srv.Stop()
	c.Timeout = units.Duration(200 * time.Millisecond)
	start := time.Now()
	if _, err := resolve(t, c); err == nil || errors.Is(err, ErrEmpty) {
		t.Fatalf("a stopped resolver answered: %v", err)
	}
	if took := time.Since(start); took > 20*c.Timeout.D() {
		t.Fatalf("a stopped resolver held the lookup for %v (timeout %v)", took, c.Timeout.D())
	}
}

// recorder is a watcher's apply: the sets it was handed.
type recorder struct {
	mu   sync.Mutex
	sets [][]Endpoint
}

func (r *recorder) apply(eps []Endpoint) { r.mu.Lock(); r.sets = append(r.sets, eps); r.mu.Unlock() }
func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.sets) == 0 {
		return "none"
	}
	return fmt.Sprint(r.sets[len(r.sets)-1])
}

func TestWatcherKeepsTheLastGoodSet(t *testing.T) {
	b := "b." + dnstest.Domain
	srv := dnstest.Start(t, []dnstest.SRV{{Name: api, Target: b, Port: 9001, Weight: 1}}, host)
	var rec recorder
	c := cfg(srv, api, 0)
	c.Timeout = units.Duration(200 * time.Millisecond)
	w, err := NewWatcher(c, nil, rec.apply, quiet)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if wait := w.step(context.Background(), now); wait != time.Second || rec.last() != "[{http://127.0.0.1:9001 1}]" {
		t.Fatalf("first answer: wait %v, set %s", wait, rec.last())
	}
	srv.Restart([]dnstest.SRV{{Name: api, Target: b, Port: 9002, Weight: 5}}, host)
	w.step(context.Background(), now)
	if rec.last() != "[{http://127.0.0.1:9002 5}]" {
		t.Fatalf("changed set not applied: %s", rec.last())
	}
	srv.Stop()
	w.step(context.Background(), now)
	st := w.Status()
	if rec.last() != "[{http://127.0.0.1:9002 5}]" || st.Failures != 1 || st.Error == "" || st.StaleSince.IsZero() {
		t.Fatalf("a stopped resolver changed the set: %s, status %+v", rec.last(), st)
	}
	// An empty answer after a good one is kept for empty_grace, then not.
	srv.Restart([]dnstest.SRV{{Name: api}}, host)
	w.step(context.Background(), now)
	if st := w.Status(); rec.last() != "[{http://127.0.0.1:9002 5}]" || !st.KeptEmpty {
		t.Fatalf("an empty answer emptied the set at once: %s %+v", rec.last(), st)
	}
	w.step(context.Background(), now.Add(2*time.Hour))
	if rec.last() != "[]" {
		t.Fatalf("empty past empty_grace still kept: %s", rec.last())
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{
		{DNS: "b.example", Port: 0},
		{DNS: "_a._tcp.example", Port: 80},
		{DNS: "b.example", Port: 80, Resolver: "nohost"},
		{DNS: "b.example", Port: 80, Resolver: "127.0.0.1:dns"},
		{DNS: "b.example", Port: 80, Resolver: "127.0.0.1:0"},
		{DNS: "b.example", Port: 80, Interval: units.Duration(time.Millisecond)},
		{DNS: "b.example", Port: 80, Scheme: "ftp"},
		{Port: 80},
	} {
		c.SetDefaults()
		if err := c.Validate(); err == nil {
			t.Fatalf("%+v accepted", c)
		}
	}
	good := Config{DNS: api}
	good.SetDefaults()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
}

// A server that swallows queries holds one resolution no longer than its
// bound, however the lookup would fan out.
func TestSilentResolverIsBoundedInTime(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c := Config{DNS: "b.example.internal", Port: 80, Resolver: pc.LocalAddr().String(), Timeout: units.Duration(100 * time.Millisecond)}
	c.SetDefaults()
	start := time.Now()
	_, err = resolve(t, c)
	took := time.Since(start)
	if err == nil || errors.Is(err, ErrEmpty) {
		t.Fatalf("a silent server answered: %v", err)
	}
	if limit := 2 * resolveQueries * c.Timeout.D(); took > limit {
		t.Fatalf("a silent server held the resolution %v, past twice its bound", took)
	}
}

// One SRV target that has no addresses (a pod whose A record went first,
// a typo in the zone) is skipped: it neither fails the whole answer, which
// kept the last set forever so no backend could join, nor empties it,
// which after empty_grace took every good target away with it.
func TestSRVTargetWithoutAddressesIsSkipped(t *testing.T) {
	b, gone, bare := "b."+dnstest.Domain, "gone."+dnstest.Domain, "bare."+dnstest.Domain
	srv := dnstest.Start(t, []dnstest.SRV{
		{Name: api, Target: b, Port: 9001, Weight: 1},
		{Name: api, Target: gone, Port: 9002, Weight: 1}, // NXDOMAIN
	}, host)
	want := "[{http://127.0.0.1:9001 1}]"
	a, err := resolve(t, cfg(srv, api, 0))
	if err != nil || fmt.Sprint(a.Endpoints) != want || fmt.Sprint(a.Unresolved) != "["+gone+".]" {
		t.Fatalf("NXDOMAIN target: %v unresolved %v, %v; want %s", a.Endpoints, a.Unresolved, err, want)
	}
	// A name that exists with no A or AAAA record (here only a TXT one).
	srv.Restart([]dnstest.SRV{
		{Name: api, Target: b, Port: 9001, Weight: 1},
		{Name: api, Target: bare, Port: 9003, Weight: 1},
	}, append(host, dnstest.Host{Name: bare, TXT: "no address"}))
	a, err = resolve(t, cfg(srv, api, 0))
	if err != nil || fmt.Sprint(a.Endpoints) != want {
		t.Fatalf("target without addresses: %v, %v; want %s", a.Endpoints, err, want)
	}
	// With no target left the answer is empty, which empty_grace guards.
	srv.Restart([]dnstest.SRV{{Name: api, Target: gone, Port: 9002, Weight: 1}}, host)
	if _, err := resolve(t, cfg(srv, api, 0)); !errors.Is(err, ErrEmpty) {
		t.Fatalf("no target resolves: %v, want ErrEmpty", err)
	}
}

// An address no backend can have is left out of the set: the unspecified
// address, which a dial takes to mean this host (and so the node's own
// listeners, a proxy loop), and multicast or broadcast ones.
func TestAddressesNoBackendCanHaveAreSkipped(t *testing.T) {
	name := "mixed." + dnstest.Domain
	srv := dnstest.Start(t, nil, []dnstest.Host{
		{Name: name, IP: "127.0.0.1"}, {Name: name, IP: "0.0.0.0"}, {Name: name, IP: "::"},
		{Name: name, IP: "224.0.0.1"}, {Name: name, IP: "ff02::1"}, {Name: name, IP: "255.255.255.255"},
	})
	a, err := resolve(t, cfg(srv, name, 8080))
	if err != nil || fmt.Sprint(a.Endpoints) != "[{http://127.0.0.1:8080 1}]" {
		t.Fatalf("endpoints %v, %v; want only 127.0.0.1", a.Endpoints, err)
	}
	// Only such addresses: an empty answer, which empty_grace guards.
	srv.Restart(nil, []dnstest.Host{{Name: name, IP: "0.0.0.0"}})
	if a, err := resolve(t, cfg(srv, name, 8080)); !errors.Is(err, ErrEmpty) {
		t.Fatalf("only 0.0.0.0: %v, %v; want ErrEmpty", a.Endpoints, err)
	}
}

// Two SRV records for one target and port with different weights gave
// the endpoint the weight of whichever came first, and dnsmasq rotates
// its records: the weight flapped between answers, each flap a changed
// set (a rebuild, and a policy's weight overwritten). The largest wins.
func TestDuplicateSRVRecordsGiveOneStableWeight(t *testing.T) {
	b := "b." + dnstest.Domain
	srv := dnstest.Start(t, []dnstest.SRV{
		{Name: api, Target: b, Port: 9001, Weight: 10},
		{Name: api, Target: b, Port: 9001, Weight: 30},
		{Name: api, Target: b, Port: 9002, Weight: 20},
	}, host)
	for range 8 {
		a, err := resolve(t, cfg(srv, api, 0))
		if got := fmt.Sprint(a.Endpoints); err != nil || got != "[{http://127.0.0.1:9001 30} {http://127.0.0.1:9002 20}]" {
			t.Fatalf("endpoints %s, %v; want the larger weight, 30, for 9001 every time", got, err)
		}
	}
}

// An answer that is empty for a reason (every address refused, every SRV
// target without one) says so in the status, not as a bare empty set.
func TestEmptyForAReasonSaysWhy(t *testing.T) {
	name := "zero." + dnstest.Domain
	srv := dnstest.Start(t, nil, []dnstest.Host{{Name: name, IP: "0.0.0.0"}})
	var rec recorder
	w, err := NewWatcher(cfg(srv, name, 8080), nil, rec.apply, quiet)
	if err != nil {
		t.Fatal(err)
	}
	w.step(context.Background(), time.Now())
	if st := w.Status(); !strings.Contains(st.Error, "0.0.0.0") {
		t.Fatalf("status %+v does not say why the set is empty", st)
	}
}

// An SRV answer naming more targets than a service may have backends is
// not followed past that bound: each target beyond it would cost its own
// address lookups, at every resolution, for endpoints that are dropped.
func TestSRVTargetsPastTheBoundAreNotLookedUp(t *testing.T) {
	const targets = maxEndpoints + 500
	var lookups atomic.Int64
	resolver := manyTargets(t, targets, func(name string, qtype uint16, m *dns.Msg) {
		lookups.Add(1)
		if qtype == dns.TypeA {
			var i int
			fmt.Sscanf(name, "t%d.", &i)
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(127, 1, byte(i/250), byte(i%250+1))})
		}
	})
	// A long query timeout: the resolution's bound, four of them, must
	// hold a thousand lookups on a loaded machine.
	c := Config{DNS: "_api._tcp.example.internal", Resolver: resolver, Interval: units.Duration(time.Second), EmptyGrace: units.Duration(time.Hour), Timeout: units.Duration(10 * time.Second), AllowLoopback: true}
	c.SetDefaults()
	a, err := resolve(t, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Endpoints) != maxEndpoints {
		t.Fatalf("%d endpoints, want the bound of %d", len(a.Endpoints), maxEndpoints)
	}
	if n := lookups.Load(); n > 2*maxEndpoints {
		t.Fatalf("%d address lookups for %d endpoints: targets past the bound were looked up", n, maxEndpoints)
	}
}

// A registry or DNS answer may name the cloud's instance-metadata service
// (169.254.169.254, fd00:ec2::254) or another link-local address: the node
// would proxy clients' requests to it, and the metadata service hands out
// the instance's credentials. Such addresses are left out and listed in
// the answer, unless the service opts in with allow_link_local.
func TestLinkLocalAndMetadataAddressesAreRefused(t *testing.T) {
	name := "meta." + dnstest.Domain
	b := "b." + dnstest.Domain
	srv := dnstest.Start(t, []dnstest.SRV{{Name: api, Target: name, Port: 80}, {Name: api, Target: b, Port: 9001}}, []dnstest.Host{
		{Name: b, IP: "127.0.0.1"}, {Name: name, IP: "127.0.0.2"},
		{Name: name, IP: "169.254.169.254"}, {Name: name, IP: "169.254.0.1"}, {Name: name, IP: "::ffff:169.254.169.254"},
		{Name: name, IP: "fe80::1"}, {Name: name, IP: "febf::1"}, {Name: name, IP: "fd00:ec2::254"}, {Name: name, IP: "100.100.100.200"}, {Name: name, IP: "168.63.129.16"},
	})
	a, err := resolve(t, cfg(srv, name, 80))
	if got := fmt.Sprint(a.Endpoints); err != nil || got != "[{http://127.0.0.2:80 1}]" {
		t.Fatalf("A/AAAA endpoints %s, %v; want only 127.0.0.2", got, err)
	}
	if got := strings.Join(a.Refused, " "); !strings.Contains(got, "169.254.169.254") || !strings.Contains(got, "fe80::1") {
		t.Fatalf("refused %q does not name the metadata and link-local addresses", got)
	}
	a, err = resolve(t, cfg(srv, api, 0))
	if got := fmt.Sprint(a.Endpoints); err != nil || got != "[{http://127.0.0.1:9001 1} {http://127.0.0.2:80 1}]" {
		t.Fatalf("SRV endpoints %s, %v", got, err)
	}
	var rec recorder
	w, err := NewWatcher(cfg(srv, api, 0), nil, rec.apply, quiet)
	if err != nil {
		t.Fatal(err)
	}
	w.step(context.Background(), time.Now())
	if st := w.Status(); !slices.Contains(st.Refused, "169.254.169.254") || st.Endpoints != 2 {
		t.Fatalf("status %+v does not list the refused addresses", st)
	}
	// Only such addresses: empty, and the status says why.
	srv.Restart(nil, []dnstest.Host{{Name: name, IP: "169.254.169.254"}})
	if a, err := resolve(t, cfg(srv, name, 80)); !errors.Is(err, ErrEmpty) || !strings.Contains(err.Error(), "169.254.169.254") {
		t.Fatalf("only the metadata address: %v, %v; want ErrEmpty naming it", a.Endpoints, err)
	}
	// An operator who runs backends there says so.
	c := cfg(srv, name, 80)
	c.AllowLinkLocal = true
	if a, err := resolve(t, c); err != nil || fmt.Sprint(a.Endpoints) != "[{http://169.254.169.254:80 1}]" {
		t.Fatalf("allow_link_local: %v, %v", a.Endpoints, err)
	}
}

// Loopback is this host: a DNS answer naming it would reach what trusts
// local callers (the node's admin API, an agent), unless the service says
// its backends are there.
func TestLoopbackNeedsAllowLoopback(t *testing.T) {
	name := "local." + dnstest.Domain
	srv := dnstest.Start(t, nil, []dnstest.Host{{Name: name, IP: "127.0.0.1"}, {Name: name, IP: "::1"}, {Name: name, IP: "127.9.9.9"}, {Name: name, IP: "::ffff:127.0.0.1"}})
	c := cfg(srv, name, 80)
	c.AllowLoopback = false
	if a, err := resolve(t, c); !errors.Is(err, ErrEmpty) || !strings.Contains(err.Error(), "127.9.9.9") {
		t.Fatalf("loopback without allow_loopback: %v, %v; want ErrEmpty naming the addresses", a.Endpoints, err)
	}
	c.AllowLoopback = true
	if a, err := resolve(t, c); err != nil || len(a.Endpoints) != 3 {
		t.Fatalf("allow_loopback: %v, %v", a.Endpoints, err)
	}
}

// serveDNS answers with handler over UDP and TCP on one loopback port.
func serveDNS(t *testing.T, handler dns.Handler) string {
	pc, ln := dnstest.Listen(t)
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// An SRV answer of thousands of targets none of which has an address
// (NXDOMAIN) was followed to the last: a lookup each, at every
// resolution, and an error naming every one in the log and the status.
// Targets are looked up to the bound whether they resolve or not, and
// what an answer lists of them is bounded.
func TestSRVTargetsWithoutAddressesAreBounded(t *testing.T) {
	const targets = 2 * maxEndpoints // within a 64 KiB TCP answer
	var lookups atomic.Int64
	addr := manyTargets(t, targets, func(_ string, _ uint16, m *dns.Msg) {
		lookups.Add(1)
		m.Rcode = dns.RcodeNameError
	})
	c := Config{DNS: "_api._tcp.example.internal", Resolver: addr, Interval: units.Duration(time.Second), EmptyGrace: units.Duration(time.Hour), Timeout: units.Duration(10 * time.Second)}
	c.SetDefaults()
	r, err := NewResolver(c.Resolver, c.Timeout.D())
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.Resolve(context.Background(), c)
	if !errors.Is(err, ErrEmpty) {
		t.Fatalf("%v, %v; want ErrEmpty", a.Endpoints, err)
	}
	if n := lookups.Load(); n > maxEndpoints {
		t.Errorf("%d address lookups: targets past the bound of %d were looked up", n, maxEndpoints)
	}
	if n := len(err.Error()); n > 4<<10 {
		t.Errorf("the error is %d bytes: it lists every target", n)
	}
}

// What an answer lists of refused addresses and unresolved targets is in
// one order however the server rotates its records: the watcher warns
// when the list changes, and a rotation is no change.
func TestRefusedAndUnresolvedListsAreStable(t *testing.T) {
	name := "meta." + dnstest.Domain
	var hosts []dnstest.Host
	var srvs []dnstest.SRV
	for i := range 6 {
		hosts = append(hosts, dnstest.Host{Name: name, IP: fmt.Sprintf("169.254.0.%d", i+1)})
		srvs = append(srvs, dnstest.SRV{Name: api, Target: fmt.Sprintf("gone%d.%s", i, dnstest.Domain), Port: 80})
	}
	hosts = append(hosts, dnstest.Host{Name: "b." + dnstest.Domain, IP: "127.0.0.1"})
	srv := dnstest.Start(t, append(srvs, dnstest.SRV{Name: api, Target: "b." + dnstest.Domain, Port: 80}), hosts)
	first := map[string]string{}
	for range 8 {
		for _, c := range []Config{cfg(srv, name, 80), cfg(srv, api, 0)} {
			a, _ := resolve(t, c)
			got := fmt.Sprint(a.Refused, a.Unresolved)
			if f, ok := first[c.DNS]; ok && f != got {
				t.Fatalf("%s: lists %s, then %s", c.DNS, f, got)
			}
			first[c.DNS] = got
		}
	}
}

// An SRV answer of a thousand targets, each with the same thousand
// addresses, gave no endpoint past the first target's, yet every target
// was looked up and its addresses kept to the end of the resolution: a
// thousand full TCP answers parsed and a million addresses held, at
// every resolution. The addresses gathered are bounded like endpoints.
func TestSRVTargetsRepeatingAddressesAreBounded(t *testing.T) {
	var lookups atomic.Int64
	addr := serveDNS(t, dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Compress = true
		name := q.Question[0].Name
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp && q.Question[0].Qtype != dns.TypeAAAA {
			m.Truncated = true
			w.WriteMsg(m)
			return
		}
		switch q.Question[0].Qtype {
		case dns.TypeSRV:
			for i := range maxEndpoints {
				m.Answer = append(m.Answer, &dns.SRV{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 60},
					Port: 9000, Weight: 1, Target: fmt.Sprintf("t%d.x.", i)})
			}
		case dns.TypeA:
			lookups.Add(1)
			for i := range maxEndpoints - 1 { // one short of the bound: each target could add one more
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A: net.IPv4(10, 0, byte(i/250), byte(i%250+1))})
			}
		}
		w.WriteMsg(m)
	}))
	c := Config{DNS: "_api._tcp.example.internal", Resolver: addr, Interval: units.Duration(time.Second), EmptyGrace: units.Duration(time.Hour), Timeout: units.Duration(10 * time.Second)}
	c.SetDefaults()
	r, err := NewResolver(c.Resolver, c.Timeout.D())
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	a, err := r.Resolve(context.Background(), c)
	runtime.ReadMemStats(&after)
	if err != nil || len(a.Endpoints) != maxEndpoints-1 {
		t.Fatalf("%d endpoints, %v", len(a.Endpoints), err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d A lookups, %d MiB allocated", lookups.Load(), alloc>>20)
	if n := lookups.Load(); n > 2 {
		t.Errorf("%d A lookups for the endpoints of the first target's", n)
	}
	if alloc > 64<<20 { // 416 MiB before the bound
		t.Errorf("one resolution allocated %d MiB", alloc>>20)
	}
}

// manyTargets serves an SRV answer of n targets (t0.x., t1.x., ...) and
// has address answer the targets' own queries; an answer too long for UDP
// is truncated there, so that the client asks again over TCP.
func manyTargets(t *testing.T, n int, address func(name string, qtype uint16, m *dns.Msg)) string {
	return serveDNS(t, dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Compress = true
		name, qtype := q.Question[0].Name, q.Question[0].Qtype
		if qtype == dns.TypeSRV {
			for i := range n {
				m.Answer = append(m.Answer, &dns.SRV{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 60},
					Port: 9000, Weight: 1, Target: fmt.Sprintf("t%d.x.", i)})
			}
		} else {
			address(name, qtype, m)
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp && m.Len() > dns.MinMsgSize {
			m.Answer, m.Truncated = nil, true
		}
		w.WriteMsg(m)
	}))
}

// An address in NAT64's well-known prefix (64:ff9b::/96, RFC 6052) is the
// IPv4 address it embeds, reached through a translator, which may be on
// this host (node-based NAT64 on IPv6-only machines), and from there as
// the host itself: it is judged as that IPv4 address.
func TestNAT64AddressesAreJudgedByTheIPv4TheyEmbed(t *testing.T) {
	name := "nat64." + dnstest.Domain
	srv := dnstest.Start(t, nil, []dnstest.Host{
		{Name: name, IP: "64:ff9b::a9fe:a9fe"}, {Name: name, IP: "64:ff9b::7f00:1"}, {Name: name, IP: "64:ff9b::6464:64c8"},
		{Name: name, IP: "64:ff9b::"}, {Name: name, IP: "64:ff9b::c000:201"},
	})
	c := cfg(srv, name, 80)
	c.AllowLoopback = false
	a, err := resolve(t, c)
	if got := fmt.Sprint(a.Endpoints); err != nil || got != "[{http://[64:ff9b::c000:201]:80 1}]" {
		t.Fatalf("endpoints %s, %v; want only the one embedding a global address (192.0.2.1)", got, err)
	}
	if got := strings.Join(a.Refused, " "); got != "64:ff9b:: 64:ff9b::6464:64c8 64:ff9b::7f00:1 64:ff9b::a9fe:a9fe" {
		t.Fatalf("refused %q", got)
	}
	c.AllowLoopback, c.AllowLinkLocal = true, true
	if a, err := resolve(t, c); err != nil || len(a.Endpoints) != 4 {
		t.Fatalf("allow_loopback and allow_link_local: %v, %v; want all but the unspecified", a.Endpoints, err)
	}
}

// A resolver's answer follows a name's CNAME chain to its addresses. A
// chain that loops was an empty answer, and empty_grace later took every
// backend away for what is a broken zone, not an emptied one; addresses
// owned by names off the chain were taken as the backends of the name
// asked for.
func TestCNAMEChainsAreFollowedAndBounded(t *testing.T) {
	cname := func(from, to string) dns.RR {
		return &dns.CNAME{Hdr: dns.RR_Header{Name: from, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: to}
	}
	a := func(owner, ip string) dns.RR {
		return &dns.A{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)}
	}
	addr := serveDNS(t, dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		srv := func(owner, target string) dns.RR {
			return &dns.SRV{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 60}, Port: 9000, Weight: 1, Target: target}
		}
		switch q.Question[0].Qtype {
		case dns.TypeSRV:
			switch q.Question[0].Name {
			case "_api._tcp.x.":
				m.Answer = []dns.RR{cname("_api._tcp.x.", "_api._tcp.real.x."), srv("_api._tcp.real.x.", "alias.x."), srv("_other._tcp.x.", "stray.x.")}
			case "_loop._tcp.x.":
				m.Answer = []dns.RR{cname("_loop._tcp.x.", "_loop._tcp.x."), srv("_loop._tcp.x.", "alias.x.")}
			}
		case dns.TypeA:
			switch q.Question[0].Name {
			case "stray.x.":
				m.Answer = []dns.RR{a("stray.x.", "192.0.2.8")}
			case "alias.x.":
				m.Answer = []dns.RR{cname("alias.x.", "Mid.x."), a("other.x.", "192.0.2.9"), cname("mid.x.", "real.x."), a("real.x.", "192.0.2.2")}
			case "loop.x.":
				m.Answer = []dns.RR{cname("loop.x.", "b.x."), cname("b.x.", "loop.x."), a("c.x.", "192.0.2.3")}
			case "long.x.":
				for i := range 20 {
					m.Answer = append(m.Answer, cname(fmt.Sprintf("l%d.x.", i), fmt.Sprintf("l%d.x.", i+1)))
				}
				m.Answer = append([]dns.RR{cname("long.x.", "l0.x.")}, append(m.Answer, a("l20.x.", "192.0.2.4"))...)
			}
		}
		w.WriteMsg(m)
	}))
	c := Config{DNS: "alias.x", Port: 80, Resolver: addr}
	c.SetDefaults()
	if a, err := resolve(t, c); err != nil || fmt.Sprint(a.Endpoints) != "[{http://192.0.2.2:80 1}]" {
		t.Errorf("a chain of two aliases: %v, %v; want only the address the chain ends at", a.Endpoints, err)
	}
	srv := Config{DNS: "_api._tcp.x", Resolver: addr}
	srv.SetDefaults()
	if a, err := resolve(t, srv); err != nil || fmt.Sprint(a.Endpoints) != "[{http://192.0.2.2:9000 1}]" {
		t.Errorf("an SRV name's alias: %v, %v; want only the SRV record the chain ends at", a.Endpoints, err)
	}
	for _, name := range []string{"loop.x", "long.x", "_loop._tcp.x"} {
		c.DNS, c.Port = name, 80
		if strings.HasPrefix(name, "_") {
			c.Port = 0
		}
		a, err := resolve(t, c)
		if err == nil || errors.Is(err, ErrEmpty) || !strings.Contains(err.Error(), "CNAME") {
			t.Errorf("%s: %v, %v; want a failure that names the CNAME chain", name, a.Endpoints, err)
		}
	}
}

// A server that truncates every answer over UDP and then stalls over TCP,
// announcing a 64 KiB answer and sending one byte of it, holds a
// resolution no longer than its bound: the watcher keeps the last good
// set, and says what timed out. It said only "read tcp ...: i/o timeout",
// neither the name asked nor that the answer had come truncated.
func TestTruncatedAnswerWithAStallingTCPFallback(t *testing.T) {
	pc, ln := dnstest.Listen(t)
	udp := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Truncated = true
		w.WriteMsg(m)
	})}
	go udp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown() })
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			t.Cleanup(func() { c.Close() })
			c.Write([]byte{0xff, 0xff, 0})
		}
	}()
	c := Config{DNS: "svc.example", Port: 80, Resolver: pc.LocalAddr().String(), Timeout: units.Duration(200 * time.Millisecond)}
	c.SetDefaults()
	var rec recorder
	good := []Endpoint{{URL: "http://192.0.2.1:80", Weight: 1}}
	w, err := NewWatcher(c, good, rec.apply, quiet)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { w.step(context.Background(), time.Now()); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a stalling TCP fallback held the resolution for 30 s")
	}
	st := w.Status()
	t.Logf("last_error: %s", st.Error)
	if len(rec.sets) != 0 || st.Failures != 1 || !strings.Contains(st.Error, "svc.example. A truncated over UDP; over TCP:") || !strings.Contains(st.Error, "timeout") {
		t.Errorf("sets applied %v, status %+v; want the last good set kept and a TCP timeout named", rec.sets, st)
	}
	if accepted.Load() == 0 {
		t.Error("the resolver never fell back to TCP")
	}
}

// However short or long the TTL a server gives, the next resolution is
// between MinInterval and the configured interval: TTL 0 does not make
// the watcher spin, and 136 years (the largest TTL) does not stop it.
func TestTTLsAreBoundedBothWays(t *testing.T) {
	var ttl atomic.Uint32
	addr := serveDNS(t, dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl.Load()}, A: net.ParseIP("192.0.2.1")}}
		}
		w.WriteMsg(m)
	}))
	c := Config{DNS: "svc.example", Port: 80, Resolver: addr, Interval: units.Duration(30 * time.Second)}
	c.SetDefaults()
	var rec recorder
	w, err := NewWatcher(c, nil, rec.apply, quiet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ttl  uint32
		want time.Duration
	}{{0, MinInterval}, {math.MaxUint32, 30 * time.Second}, {7, 7 * time.Second}} {
		ttl.Store(tc.ttl)
		if wait := w.step(context.Background(), time.Now()); wait != tc.want || rec.last() != "[{http://192.0.2.1:80 1}]" {
			t.Errorf("TTL %d: next in %v (want %v), set %s", tc.ttl, wait, tc.want, rec.last())
		}
	}
}
