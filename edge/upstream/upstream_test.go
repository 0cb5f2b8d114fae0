package upstream

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"perigee/edge/discovery"
	"perigee/edge/exchange"
	"perigee/units"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func service(t *testing.T, balancer string, weights ...int) *Service {
	t.Helper()
	c := Config{Balancer: balancer}
	for i, w := range weights {
		c.Backends = append(c.Backends, BackendConfig{URL: fmt.Sprintf("http://127.0.0.1:%d", 9001+i), Weight: w})
	}
	c.Outlier = Outlier{ConsecutiveFailures: 3, BaseEjection: units.Duration(time.Hour), MaxEjection: units.Duration(2 * time.Hour), MaxEjectedPercent: 50}
	c.Hash.Header = "X-User"
	s, err := NewService("svc", c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func counts(t *testing.T, s *Service, n int, req func(i int) *http.Request) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		b, err := s.Pick(req(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		got[b.Addr]++
	}
	return got
}

func plain(int) *http.Request { return httptest.NewRequest("GET", "/", nil) }

func TestSmoothRoundRobinFollowsWeightsAndInterleaves(t *testing.T) {
	s := service(t, RoundRobin, 5, 1, 1)
	var seq []string
	for range 7 {
		b, _ := s.Pick(plain(0), nil)
		seq = append(seq, b.Addr[len(b.Addr)-1:])
	}
	// Smooth WRR never sends five in a row to the heavy backend.
	if fmt.Sprint(seq) != "[1 1 2 1 3 1 1]" {
		t.Fatalf("sequence %v, want the smooth interleaving [1 1 2 1 3 1 1]", seq)
	}
	got := counts(t, s, 700, plain)
	if got["127.0.0.1:9001"] != 500 || got["127.0.0.1:9002"] != 100 {
		t.Fatalf("distribution %v, want 500/100/100", got)
	}
}

func TestLeastRequestPrefersIdleBackends(t *testing.T) {
	s := service(t, LeastRequest, 1, 1, 1)
	busy := s.Backends()[0]
	busy.inFlight.Store(50)
	got := counts(t, s, 3000, plain)
	// With power of two choices the busy backend wins only when it is drawn
	// against itself, which cannot happen: it gets nothing.
	if got[busy.Addr] != 0 {
		t.Fatalf("busy backend got %d of 3000 picks", got[busy.Addr])
	}
	if a, b := got["127.0.0.1:9002"], got["127.0.0.1:9003"]; a < 1000 || b < 1000 {
		t.Fatalf("idle backends unevenly used: %v", got)
	}
}

func TestEWMAAvoidsTheSlowBackend(t *testing.T) {
	s := service(t, EWMA, 1, 1, 1)
	now := time.Now()
	for i, b := range s.Backends() {
		b.observe(time.Duration(1+i*50)*time.Millisecond, now) // 1ms, 51ms, 101ms
	}
	got := counts(t, s, 3000, plain)
	if got["127.0.0.1:9001"] < 1900 || got["127.0.0.1:9003"] != 0 {
		t.Fatalf("ewma distribution %v: the fast backend should win most, the slowest never", got)
	}
}

func TestPeakEWMATakesSpikesAtOnceAndDecays(t *testing.T) {
	b := newBackend(mustURL("http://127.0.0.1:1"), 1, SourceStatic)
	t0 := time.Now()
	b.observe(10*time.Millisecond, t0)
	b.observe(200*time.Millisecond, t0.Add(time.Millisecond))
	if b.Latency() != 200*time.Millisecond {
		t.Fatalf("peak not taken at once: %v", b.Latency())
	}
	b.observe(10*time.Millisecond, t0.Add(30*time.Second))
	if l := b.Latency(); l > 25*time.Millisecond {
		t.Fatalf("peak not decayed after 3 time constants: %v", l)
	}
}

func TestConsistentHashIsStickyAndMovesOnlyTheDeadBackendsKeys(t *testing.T) {
	s := service(t, Hash, 1, 1, 1, 1)
	user := func(i int) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("X-User", fmt.Sprint("user-", i))
		return r
	}
	before := map[int]string{}
	for i := range 2000 {
		b, _ := s.Pick(user(i), nil)
		before[i] = b.Addr
		if b2, _ := s.Pick(user(i), nil); b2 != b {
			t.Fatal("same key went to two backends")
		}
	}
	share := counts(t, s, 2000, user)
	for addr, n := range share {
		if math.Abs(float64(n)-500) > 150 {
			t.Fatalf("uneven ring share %s=%d: %v", addr, n, share)
		}
	}
	dead := s.Backends()[1]
	dead.checkUp.Store(false)
	s.refresh()
	moved := 0
	for i := range 2000 {
		b, _ := s.Pick(user(i), nil)
		if b == dead {
			t.Fatal("picked a dead backend")
		}
		if before[i] != dead.Addr && b.Addr != before[i] {
			moved++
		}
	}
	if moved != 0 {
		t.Fatalf("%d keys of healthy backends moved", moved)
	}
}

func TestPassiveEjectionRespectsMaxPercentAndRestore(t *testing.T) {
	s := service(t, RoundRobin, 1, 1, 1, 1)
	bs := s.Backends()
	for _, b := range bs {
		for range 3 {
			s.Done(b, time.Millisecond, true)
		}
	}
	if n := len(s.Healthy()); n != 2 {
		t.Fatalf("%d healthy after all failed; max_ejected_percent 50 should keep 2", n)
	}
	var ejected *Backend
	for _, b := range bs {
		if !b.Healthy(time.Now()) {
			ejected = b
		}
	}
	if err := s.Restore(ejected.Addr); err != nil {
		t.Fatal(err)
	}
	if !ejected.Healthy(time.Now()) || len(s.Healthy()) != 3 {
		t.Fatal("restore did not bring the backend back")
	}
	if err := s.Restore("127.0.0.1:1"); err == nil {
		t.Fatal("restore of an unknown backend succeeded")
	}
}

func TestEjectionTimeGrows(t *testing.T) {
	s := service(t, RoundRobin, 1, 1)
	s.cfg.Outlier.BaseEjection = units.Duration(50 * time.Millisecond)
	b := s.Backends()[0]
	var lengths []time.Duration
	for range 3 {
		for range 3 {
			s.Done(b, 0, true)
		}
		lengths = append(lengths, time.Until(time.Unix(0, b.ejectedUntil.Load())))
		b.ejectedUntil.Store(0)
	}
	if !(lengths[0] < lengths[1] && lengths[1] < lengths[2]) {
		t.Fatalf("ejection times did not grow: %v", lengths)
	}
}

func TestNoHealthyBackend(t *testing.T) {
	s := service(t, LeastRequest, 1)
	off := 0
	s.cfg.PanicThreshold = &off // with panic mode on, the pool would still be used
	s.Backends()[0].checkUp.Store(false)
	s.refresh()
	if _, err := s.Pick(plain(0), nil); err != ErrNoHealthy {
		t.Fatalf("got %v, want ErrNoHealthy", err)
	}
}

func TestActiveHealthChecksEjectAndRecover(t *testing.T) {
	var up atomic.Bool
	up.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || !up.Load() {
			w.WriteHeader(503)
		}
	}))
	defer srv.Close()
	c := Config{
		Balancer: RoundRobin,
		Backends: []BackendConfig{{URL: srv.URL, Weight: 1}},
		Health:   Health{Path: "/healthz", Interval: units.Duration(20 * time.Millisecond), Timeout: units.Duration(time.Second), Rise: 2, Fall: 2},
	}
	s, err := NewService("svc", c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(srv.Client())
	defer s.Close()
	waitFor(t, "healthy at start", func() bool { return len(s.Healthy()) == 1 })
	up.Store(false)
	waitFor(t, "ejected after failing checks", func() bool { return len(s.Healthy()) == 0 })
	up.Store(true)
	waitFor(t, "back after passing checks", func() bool { return len(s.Healthy()) == 1 })
}

func TestRuntimeBackendsAndWeights(t *testing.T) {
	s := service(t, RoundRobin, 1)
	if err := s.AddBackend("http://127.0.0.1:9100", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.SetWeight("127.0.0.1:9100", 3); err != nil {
		t.Fatal(err)
	}
	got := counts(t, s, 400, plain)
	if got["127.0.0.1:9100"] != 300 {
		t.Fatalf("weight 3 of 4 not honoured: %v", got)
	}
	if err := s.SetWeight("127.0.0.1:9100", 0); err == nil {
		t.Fatal("weight 0 accepted")
	}
	if err := s.RemoveBackend("http://127.0.0.1:9100"); err != nil {
		t.Fatal(err)
	}
	if len(s.Backends()) != 1 {
		t.Fatal("backend not removed")
	}
	if err := s.AddBackend("not a url", 1); err == nil {
		t.Fatal("bad url accepted")
	}
}

func TestRetryBudget(t *testing.T) {
	var r retryBudget
	r.init(0.1)
	spent := 0
	for r.spend() {
		spent++
	}
	if spent != 10 {
		t.Fatalf("floor allowed %d retries, want 10", spent)
	}
	for range 100 {
		r.earn()
	}
	spent = 0
	for r.spend() {
		spent++
	}
	if spent != 10 {
		t.Fatalf("100 requests at ratio 0.1 earned %d retries, want 10", spent)
	}
}

func TestReloadKeepsBackendState(t *testing.T) {
	s := service(t, RoundRobin, 1, 1)
	b := s.Backends()[0]
	b.observe(42*time.Millisecond, time.Now())
	s2, err := NewService("svc", s.cfg, s, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Backends()[0] != b || s2.Backends()[0].Latency() != 42*time.Millisecond {
		t.Fatal("backend state lost across reload")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// Defect 6: the ejection timer of the old service refreshed only the old
// service, so after a reload an ejected backend never came back.
func TestEjectionEndsOnTimeAfterReload(t *testing.T) {
	s := service(t, RoundRobin, 1, 1)
	b := s.Backends()[0]
	if err := s.Eject(b.Addr, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	s2, err := NewService("svc", s.cfg, s, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	defer s2.Close()
	if len(s2.Healthy()) != 1 {
		t.Fatalf("the reload forgot the ejection: %d healthy", len(s2.Healthy()))
	}
	waitFor(t, "ejected backend back in the new service", func() bool { return len(s2.Healthy()) == 2 })
}

// Defect 7: least_request with weights 1:2 at low load split nothing by
// weight; it must split 1:2 like Envoy's weighted least request.
func TestWeightedLeastRequestSplitsByWeightAtLowLoad(t *testing.T) {
	s := service(t, LeastRequest, 1, 2)
	got := map[string]int{}
	for range 60 { // sequential: each request ends before the next
		l, err := s.Acquire(plain(0), nil, false)
		if err != nil {
			t.Fatal(err)
		}
		l.End()
		got[l.Backend.Addr]++
	}
	if got["127.0.0.1:9001"] != 20 || got["127.0.0.1:9002"] != 40 {
		t.Fatalf("weights 1:2 over 60 sequential picks gave %v, want 20/40", got)
	}
}

func TestWeightedLeastRequestPrefersTheLessLoadedUnderLoad(t *testing.T) {
	s := service(t, LeastRequest, 1, 2)
	heavy := s.Backends()[1]
	heavy.inFlight.Store(20) // effective weight 2/21 against 1/1
	got := counts(t, s, 1000, plain)
	if got[heavy.Addr] > 150 {
		t.Fatalf("the loaded heavy backend got %d of 1000 picks: %v", got[heavy.Addr], got)
	}
}

func TestEWMACountsFailures(t *testing.T) {
	s := service(t, EWMA, 1, 1)
	fast, slow := s.Backends()[0], s.Backends()[1]
	now := time.Now()
	slow.observe(50*time.Millisecond, now)
	fast.observe(time.Millisecond, now)
	s.Done(fast, time.Millisecond, true) // it fails, fast
	if fast.cost() <= slow.cost() {
		t.Fatalf("a backend failing in 1ms costs %v, less than a healthy 50ms one (%v)", fast.cost(), slow.cost())
	}
}

// Defect 8: backends active checks marked down did not count toward the
// max-ejected share, so ejection could empty the pool.
func TestOutlierEjectionCountsBackendsMarkedDown(t *testing.T) {
	s := service(t, RoundRobin, 1, 1, 1, 1)
	bs := s.Backends()
	bs[0].checkUp.Store(false)
	bs[1].checkUp.Store(false)
	s.refresh()
	for range 3 {
		s.Done(bs[2], time.Millisecond, true)
	}
	if !bs[2].Healthy(time.Now()) {
		t.Fatal("ejected a third of four backends while two were down: max_ejected_percent 50 exceeded")
	}
}

func TestPanicThresholdBalancesAcrossAll(t *testing.T) {
	s := service(t, RoundRobin, 1, 1, 1, 1)
	bs := s.Backends()
	for _, b := range bs[:3] {
		b.checkUp.Store(false)
	}
	s.refresh()
	if st := s.Status(time.Now()); !st.Panic {
		t.Fatal("one healthy of four (25% < 50%) is not reported as panic")
	}
	got := counts(t, s, 400, plain)
	for _, b := range bs {
		if got[b.Addr] != 100 {
			t.Fatalf("panic mode must balance across all backends: %v", got)
		}
	}
	bs[0].checkUp.Store(true)
	s.refresh()
	if st := s.Status(time.Now()); st.Panic {
		t.Fatal("two healthy of four (50%) is still panic")
	}
	got = counts(t, s, 400, plain)
	if got[bs[1].Addr]+got[bs[2].Addr] != 0 {
		t.Fatalf("out of panic, down backends still get traffic: %v", got)
	}
}

func TestPanicThresholdValidated(t *testing.T) {
	for _, p := range []int{-1, 101} {
		c := Config{Backends: []BackendConfig{{URL: "http://127.0.0.1:1"}}, PanicThreshold: &p}
		c.SetDefaults()
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "panic_threshold") {
			t.Fatalf("panic_threshold %d: got %v", p, err)
		}
	}
}

func TestProtocolNeedsItsScheme(t *testing.T) {
	for _, tc := range []struct{ protocol, url, want string }{
		{H2C, "http://127.0.0.1:1", ""},
		{H2, "https://127.0.0.1:1", ""},
		{HTTP1, "https://127.0.0.1:1", ""},
		{H2C, "https://127.0.0.1:1", "protocol h2c needs http:// backends"},
		{H2, "http://127.0.0.1:1", "protocol h2 needs https:// backends"},
		{"h3", "http://127.0.0.1:1", `unknown protocol "h3"`},
	} {
		c := Config{Protocol: tc.protocol, Backends: []BackendConfig{{URL: tc.url}}}
		c.SetDefaults()
		err := c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s with %s: got %v, want %q", tc.protocol, tc.url, err, tc.want)
		}
	}
	var c Config
	c.SetDefaults()
	if c.Protocol != HTTP1 {
		t.Fatalf("default protocol %q", c.Protocol)
	}
}

// A discovery answer may give every backend its own weight; the round
// robin's cycle is then the sum of all weights long, and computing it took
// a second (500,500 steps over 1,000 backends) under the service's lock at
// every health change or ejection. The sequence is bounded; shares still
// follow the weights.
func TestRoundRobinRebuildIsBoundedWithManyWeights(t *testing.T) {
	s, err := NewService("svc", Config{Balancer: RoundRobin}, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	var eps []discovery.Endpoint
	total := 0
	for i := range 1000 {
		eps = append(eps, discovery.Endpoint{URL: fmt.Sprintf("http://127.0.%d.%d:80", i/250, i%250+1), Weight: 1000 - i})
		total += 1000 - i
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	s.SetDiscovered(eps)
	runtime.ReadMemStats(&m1)
	seq := *s.balancer.(*smoothRR).seq.Load()
	alloc := m1.TotalAlloc - m0.TotalAlloc
	t.Logf("sequence of %d picks, rebuild allocated %d KiB", len(seq), alloc>>10)
	if len(seq) > maxSequence || alloc > 1<<20 {
		t.Fatalf("sequence of %d picks (at most %d), %d KiB allocated for one rebuild", len(seq), maxSequence, alloc>>10)
	}
	got := map[string]int{}
	for _, b := range seq {
		got[b.Addr]++
	}
	for _, i := range []int{0, 100, 500} {
		addr := fmt.Sprintf("127.0.%d.%d:80", i/250, i%250+1)
		want := float64(len(seq)) * float64(1000-i) / float64(total)
		if math.Abs(float64(got[addr])-want) > 1 {
			t.Errorf("backend of weight %d: %d picks of %d, want %.1f", 1000-i, got[addr], len(seq), want)
		}
	}
}

// silentBackend accepts connections and reads what comes, answering
// nothing: each probe to it runs to its timeout.
func silentBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }() // until the prober gives up
		}
	}()
	return "http://" + l.Addr().String()
}

// Health checks ran one backend after another, each up to its timeout, so
// a backend that never answers (or a thousand discovered ones) held back
// every other backend's verdict: here a failing backend stayed in rotation
// for the silent one's whole 30 s timeout, once per check it needed.
func TestSilentBackendDoesNotHoldOthersHealthChecks(t *testing.T) {
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer failing.Close()
	timeout := 30 * time.Second
	c := Config{
		Balancer: RoundRobin,
		Backends: []BackendConfig{{URL: silentBackend(t), Weight: 1}, {URL: failing.URL, Weight: 1}},
		Health:   Health{Path: "/healthz", Interval: units.Duration(20 * time.Millisecond), Timeout: units.Duration(timeout), Rise: 2, Fall: 2},
	}
	s, err := NewService("svc", c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(failing.Client())
	defer s.Close()
	down := func() bool { return !s.Backends()[1].checkUp.Load() }
	// A third of the silent backend's timeout: the verdict must not wait for it.
	for deadline := time.Now().Add(timeout / 3); !down(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the failing backend is still up after %v: the silent one's checks held it", timeout/3)
		}
	}
}

// A health check answered with a redirect is judged by that answer (3xx
// passes); following it sent the node's checker wherever a backend said,
// such as the admin API or a metadata service.
func TestHealthChecksDoNotFollowRedirects(t *testing.T) {
	var trapped, probed atomic.Int32
	trap := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { trapped.Add(1) }))
	defer trap.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probed.Add(1)
		http.Redirect(w, r, trap.URL+"/latest/meta-data/", http.StatusFound)
	}))
	defer srv.Close()
	c := Config{
		Balancer: RoundRobin,
		Backends: []BackendConfig{{URL: srv.URL, Weight: 1}},
		Health:   Health{Path: "/healthz", Interval: units.Duration(20 * time.Millisecond), Timeout: units.Duration(time.Second), Rise: 1, Fall: 1},
	}
	s, err := NewService("svc", c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(srv.Client())
	defer s.Close()
	waitFor(t, "two probes", func() bool { return probed.Load() >= 2 })
	if n := trapped.Load(); n > 0 || len(s.Healthy()) != 1 {
		t.Fatalf("the checker followed the redirect %d times; healthy %d, want 1 (a 3xx passes)", n, len(s.Healthy()))
	}
}

// While max_ejected_percent keeps a failing backend in (here its peer is
// ejected), its failures in a row went on counting in an int32: past 2^31
// the count went negative, and the backend could not be ejected again for
// as many failures more. The count stops at the threshold.
func TestFailuresInARowDoNotOverflow(t *testing.T) {
	s := service(t, RoundRobin, 1, 1)
	a, b := s.Backends()[0], s.Backends()[1]
	for range 3 {
		s.Done(a, 0, true)
	}
	if a.Healthy(time.Now()) {
		t.Fatal("a is not ejected")
	}
	// b fails while a's ejection holds it in; 2^31 failures are too many
	// for a test, so the count starts near where they would have left it.
	b.consecFails.Store(math.MaxInt32 - 10)
	for range 20 {
		s.Done(b, 0, true)
	}
	if err := s.Restore(a.Addr); err != nil {
		t.Fatal(err)
	}
	s.Done(b, 0, true)
	if b.Healthy(time.Now()) {
		t.Fatalf("b, failing in a row, is not ejected once it may be (count %d)", b.consecFails.Load())
	}
}

// The hash ring is built over every backend by weight, healthy or not,
// yet each health change or ejection rebuilt it: 100,000 points hashed
// and sorted (1.6 MiB, tens of milliseconds) under the service's lock,
// as often as backends flap. A change of health alone keeps the ring.
func TestHealthChangeKeepsTheHashRing(t *testing.T) {
	s := service(t, Hash, 1000, 1000, 1000, 1000)
	ring := s.balancer.(*ringHash).ring.Load()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for i := range 10 {
		s.Backends()[i%4].checkUp.Store(i%2 == 1)
		s.refresh()
	}
	runtime.ReadMemStats(&m1)
	alloc := m1.TotalAlloc - m0.TotalAlloc
	t.Logf("10 health changes over a ring of %d points allocated %d KiB", len(*ring), alloc>>10)
	if s.balancer.(*ringHash).ring.Load() != ring || alloc > 64<<10 {
		t.Fatalf("health changes rebuilt the ring: %d KiB allocated", alloc>>10)
	}
	if err := s.SetWeight(s.Backends()[0].Addr, 10); err != nil {
		t.Fatal(err)
	}
	if s.balancer.(*ringHash).ring.Load() == ring {
		t.Fatal("a weight change kept the old ring")
	}
}

// Backends are told apart by address (host:port) everywhere but where
// they were made: policies, the actuator and the metrics name them by
// it. Two with one address (a URL with and without its trailing slash,
// http and https, or a discovery answer naming a static backend's
// address) became two series with the same labels, and the node's whole
// /metrics answered 500; a policy could reach only the first.
func TestBackendsHaveOneAddressEach(t *testing.T) {
	for _, urls := range [][]string{
		{"http://127.0.0.1:9001", "http://127.0.0.1:9001/"},
		{"http://127.0.0.1:9001", "https://127.0.0.1:9001"},
	} {
		c := Config{Backends: []BackendConfig{{URL: urls[0]}, {URL: urls[1]}}}
		c.SetDefaults()
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "backends[1]") {
			t.Errorf("%q: %v, want backends[1] refused for its address", urls, err)
		}
	}
	s, err := NewService("svc", Config{Backends: []BackendConfig{{URL: "http://127.0.0.1:9001/", Weight: 1}}}, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9001", Weight: 1}, {URL: "http://127.0.0.1:9002", Weight: 1}})
	var addrs []string
	for _, b := range s.Backends() {
		addrs = append(addrs, b.Addr+" "+b.Source)
	}
	if fmt.Sprint(addrs) != "[127.0.0.1:9001 static 127.0.0.1:9002 discovery]" {
		t.Fatalf("backends %q, want the static one and the new address", addrs)
	}
}

// A backend URL may end in a slash; its checks went to "//healthz", which
// a backend that does not merge slashes answers 404: a healthy backend
// marked down.
func TestHealthPathOfABackendURLWithASlash(t *testing.T) {
	paths := make(chan string, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case paths <- r.URL.Path:
		default:
		}
		if r.URL.Path != "/healthz" {
			w.WriteHeader(404)
		}
	}))
	defer srv.Close()
	c := Config{
		Balancer: RoundRobin,
		Backends: []BackendConfig{{URL: srv.URL + "/", Weight: 1}},
		Health:   Health{Path: "/healthz", Interval: units.Duration(20 * time.Millisecond), Timeout: units.Duration(time.Second), Rise: 1, Fall: 1},
	}
	s, err := NewService("svc", c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(srv.Client())
	defer s.Close()
	if p := <-paths; p != "/healthz" {
		t.Fatalf("checked %q, want /healthz", p)
	}
}

// The client_ip key is the client the node resolved, hashed as it is:
// no string is made of it for each request.
func TestHashClientIPKeyAllocatesNothing(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	x, ctx := exchange.Begin(r, time.Now())
	defer exchange.End(x)
	x.Client.Addr = netip.MustParseAddr("2001:db8::1")
	r = r.WithContext(ctx)
	h := &ringHash{key: HashKey{ClientIP: true}}
	if n := testing.AllocsPerRun(100, func() { h.hashOf(r) }); n != 0 {
		t.Fatalf("%v allocations a key", n)
	}
	k1, _ := h.hashOf(r)
	x.Client.Addr = netip.MustParseAddr("2001:db8::2")
	if k2, _ := h.hashOf(r); k1 == k2 {
		t.Fatal("two clients, one key")
	}
}
