package upstream

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"perigee/edge/discovery"
	"perigee/units"
)

func TestDiscoveredBackendsKeepStateAndDrain(t *testing.T) {
	s := service(t, RoundRobin, 1) // static 127.0.0.1:9001
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9001", Weight: 9}, {URL: "http://127.0.0.1:9100", Weight: 2}, {URL: "http://127.0.0.1:9101", Weight: 1}})
	bs := s.Backends()
	if len(bs) != 3 || bs[0].Source != SourceStatic || bs[0].Weight() != 1 {
		t.Fatalf("a discovered address that is static must stay the static backend: %+v", s.Status(time.Now()).Backends)
	}
	kept, gone := bs[1], bs[2]
	if kept.Source != SourceDiscovery || kept.Weight() != 2 {
		t.Fatalf("discovered backend %+v", kept.Status(time.Now()))
	}
	kept.observe(42*time.Millisecond, time.Now())
	_ = s.Eject(kept.Addr, time.Hour)
	l, err := s.Acquire(plain(0), nil, false)
	for err == nil && l.Backend != gone { // hold a request on the one about to go
		l.End()
		l, err = s.Acquire(plain(0), nil, false)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetWeight(kept.Addr, 7); err != nil {
		t.Fatal(err)
	}
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 2}})
	if b := s.Backends()[1]; b != kept || b.Latency() != 42*time.Millisecond || b.Healthy(time.Now()) || b.Weight() != 7 {
		t.Fatal("a re-discovered backend lost its state (latency, ejection, the policy's weight)")
	}
	st := s.Status(time.Now())
	if len(s.Backends()) != 2 || len(st.Backends) != 3 || !st.Backends[2].Draining {
		t.Fatalf("the vanished backend is not draining: %+v", st.Backends)
	}
	for range 100 {
		if b, _ := s.Pick(plain(0), nil); b == gone {
			t.Fatal("a draining backend got a new request")
		}
	}
	l.End()
	if st := s.Status(time.Now()); len(st.Backends) != 2 {
		t.Fatal("a drained backend is still listed")
	}
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 4}})
	if kept.Weight() != 4 {
		t.Fatal("a weight discovery changed did not follow")
	}
	gone.observe(77*time.Millisecond, time.Now())
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 4}, {URL: "http://127.0.0.1:9101", Weight: 1}})
	if b := s.Backends()[2]; b != gone || b.Latency() != 77*time.Millisecond {
		t.Fatal("a backend back after a flap in DNS lost its state")
	}
}

func TestDiscoveredSetCarriesOverAReload(t *testing.T) {
	c := Config{Balancer: RoundRobin, Discovery: discovery.Config{DNS: "_api._tcp.example.internal", Resolver: "127.0.0.1:1"}}
	c.SetDefaults()
	s, err := NewService("svc", c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 3}})
	b := s.Backends()[0]
	s2, err := NewService("svc", c, s, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(s2.Backends()) != 1 || s2.Backends()[0] != b {
		t.Fatal("the discovered set did not carry over a reload")
	}
	if s2.Status(time.Now()).Changed != s.Status(time.Now()).Changed {
		t.Fatal("a reload that changed no backend moved backends_changed")
	}
}

// A reload that retunes discovery (its interval, timeout, grace or
// resolver) but names the same records dropped the discovered set: the
// new service started empty until its first answer, and with the
// resolver down, never got one. Only another name, port or scheme, which
// makes other endpoints, starts afresh.
func TestDiscoveredSetCarriesOverARetuningReload(t *testing.T) {
	c := Config{Balancer: RoundRobin, Discovery: discovery.Config{DNS: "_api._tcp.example.internal", Resolver: "127.0.0.1:1"}}
	c.SetDefaults()
	s, err := NewService("svc", c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 3}})
	retuned := c
	retuned.Discovery.Interval = units.Duration(time.Minute)
	retuned.Discovery.Timeout = units.Duration(time.Second)
	retuned.Discovery.EmptyGrace = units.Duration(time.Hour)
	retuned.Discovery.Resolver = "127.0.0.1:2"
	s2, err := NewService("svc", retuned, s, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(s2.Backends()) != 1 {
		t.Fatalf("a retuned discovery dropped the set: %d backends", len(s2.Backends()))
	}
	renamed := c
	renamed.Discovery.DNS = "_other._tcp.example.internal"
	s3, err := NewService("svc", renamed, s2, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(s3.Backends()) != 0 {
		t.Fatalf("another name kept the old set: %d backends", len(s3.Backends()))
	}
	// A set found under a rule the reload withdraws is not carried over:
	// a loopback backend allow_loopback let in stays out without it.
	local := c
	local.Discovery.AllowLoopback = true
	s4, err := NewService("svc", local, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s4.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 1}})
	s5, err := NewService("svc", c, s4, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(s5.Backends()) != 0 {
		t.Fatalf("withdrawing allow_loopback kept the loopback set: %d backends", len(s5.Backends()))
	}
}

// checkedService has one static backend that passes its checks, which
// run every hour: a discovered backend's check is the one made when it was
// found. health answers each backend's checks by its address; probed
// counts them.
func checkedService(t *testing.T, health func(addr string) int) (s *Service, next func() string, probed func(addr string) int) {
	t.Helper()
	var mu sync.Mutex
	hits := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := health(r.Host)
		mu.Lock()
		hits[r.Host]++
		mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	c := Config{
		Balancer: RoundRobin,
		Backends: []BackendConfig{{URL: srv.URL, Weight: 1}},
		Health:   Health{Path: "/healthz", Interval: units.Duration(time.Hour), Timeout: units.Duration(5 * time.Second), Rise: 2, Fall: 2},
	}
	c.SetDefaults()
	s, err := NewService("svc", c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	// Every backend is the one test server, under other loopback addresses.
	s.Start(&http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}}})
	t.Cleanup(s.Close)
	probed = func(addr string) int {
		mu.Lock()
		defer mu.Unlock()
		return hits[addr]
	}
	static := s.Backends()[0].Addr
	waitFor(t, "the static backend's first check", func() bool { return probed(static) > 0 })
	port, n := srv.Listener.Addr().(*net.TCPAddr).Port, 1
	next = func() string { n++; return fmt.Sprintf("127.0.0.%d:%d", n, port) }
	return s, next, probed
}

func TestDiscoveredBackendTakesNoTrafficBeforeItsFirstCheck(t *testing.T) {
	var later atomic.Bool
	var held atomic.Pointer[string]
	release, gate := make(chan struct{}), make(chan struct{})
	s, next, probed := checkedService(t, func(addr string) int {
		switch {
		case strings.HasPrefix(addr, "127.0.0.1:"):
			return 200
		case held.Load() != nil && *held.Load() == addr:
			<-gate
			return 503 // another instance now, not ready
		case later.Load():
			<-release // passes, once the test has looked
			return 200
		}
		return 503 // a half-started instance
	})
	static := s.Backends()[0].Addr
	bad := next()
	eps := []discovery.Endpoint{{URL: "http://" + bad, Weight: 1}}
	s.SetDiscovered(eps)
	for range 100 {
		if b, err := s.Pick(plain(0), nil); err != nil || b.Addr != static {
			t.Fatalf("a discovered backend not yet checked took a request (%v, %v)", b.Addr, err)
		}
	}
	waitFor(t, "the new backend checked at once, not an interval later", func() bool { return !s.Backends()[1].unchecked.Load() })
	if probed(static) != 1 {
		t.Fatal("checking a new backend checked the others again")
	}
	if len(s.Healthy()) != 1 {
		t.Fatalf("a discovered backend that failed its first check takes traffic: %+v", s.Status(time.Now()).Backends)
	}

	// Three more: until checked they do not count toward the panic
	// threshold either, so the one healthy backend is not joined by them.
	later.Store(true)
	for range 3 {
		eps = append(eps, discovery.Endpoint{URL: "http://" + next(), Weight: 1})
	}
	s.SetDiscovered(eps)
	if s.Panic() {
		t.Fatal("unchecked backends pushed the service into panic mode")
	}
	for range 100 {
		if b, _ := s.Pick(plain(0), nil); b.Addr != static {
			t.Fatalf("unchecked backend %s took a request", b.Addr)
		}
	}
	close(release)
	waitFor(t, "the new backends checked at once, not an interval later", func() bool { return len(s.Healthy()) == 4 })

	// One back after an absence is checked again before it serves: what
	// answers at its address now may be another instance. That check
	// decides alone, even if the health checks never saw it gone.
	back := s.Backends()[2]
	held.Store(&back.Addr)
	s.SetDiscovered(slices.DeleteFunc(slices.Clone(eps), func(e discovery.Endpoint) bool { return e.URL == back.URL.String() }))
	s.SetDiscovered(eps)
	if !slices.Contains(s.Backends(), back) {
		t.Fatal("the backend back after an absence lost its state")
	}
	for range 100 {
		if b, _ := s.Pick(plain(0), nil); b == back {
			t.Fatal("a backend back after an absence took a request before its check")
		}
	}
	close(gate)
	waitFor(t, "the returning backend checked at once", func() bool { return !back.unchecked.Load() })
	if back.Healthy(time.Now()) {
		t.Fatal("a returning backend that failed its check serves")
	}
}

func TestUncheckedBackendServesAfterAReloadThatTurnsChecksOff(t *testing.T) {
	c := Config{Balancer: RoundRobin, Discovery: discovery.Config{DNS: "_api._tcp.example.internal", Resolver: "127.0.0.1:1"},
		Health: Health{Path: "/healthz", Interval: units.Duration(time.Hour), Timeout: units.Duration(time.Second)}}
	c.SetDefaults()
	s, err := NewService("svc", c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 1}})
	if len(s.Healthy()) != 0 {
		t.Fatal("a discovered backend serves before its check")
	}
	c.Health = Health{}
	s2, err := NewService("svc", c, s, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(s2.Healthy()) != 1 {
		t.Fatal("a backend left unchecked by a reload that turned checks off never serves")
	}
}

// Backends waiting for their first check count neither way in
// max_ejected_percent: a batch of them does not shield a failing backend.
func TestUncheckedBackendsDoNotBlockOutlierEjection(t *testing.T) {
	s := service(t, RoundRobin, 1, 1) // max_ejected_percent 50: one of the two may go
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 1}, {URL: "http://127.0.0.1:9101", Weight: 1}})
	for _, b := range s.Backends()[2:] {
		b.unchecked.Store(true)
	}
	s.refresh()
	failing := s.Backends()[0]
	for range 3 {
		s.Done(failing, time.Millisecond, true)
	}
	if failing.Healthy(time.Now()) {
		t.Fatal("a backend failing in a row was kept in because unchecked backends counted as out")
	}
}

// In panic mode the hash ring balances across every checked backend, as
// the others do, however many wait for their first check.
func TestHashPanicModeWithUncheckedBackends(t *testing.T) {
	s := service(t, Hash, 1, 1)
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 1}})
	s.Backends()[2].unchecked.Store(true)
	for _, b := range s.Backends()[:2] {
		b.checkUp.Store(false) // both down: panic
	}
	s.refresh()
	if !s.Panic() {
		t.Fatal("no panic mode with every checked backend down")
	}
	for i := range 50 {
		r := plain(0)
		r.Header.Set("X-User", fmt.Sprint(i))
		b, err := s.Pick(r, nil)
		if err != nil || b.unchecked.Load() {
			t.Fatalf("pick in panic mode: %v, %v", b, err)
		}
	}
}
