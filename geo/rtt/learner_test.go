package rtt_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"perigee/geo/demodb"
	"perigee/geo/geoip"
	"perigee/geo/internal/clientnet"
	"perigee/geo/rtt"
	"perigee/memtest"
)

func demoDB(t testing.TB) *geoip.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "city.mmdb")
	if err := demodb.Write(path); err != nil {
		t.Fatal(err)
	}
	db, err := geoip.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// clock is a settable time source shared by learners in a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func cellOf(c demodb.City) rtt.Cell { return rtt.CellOf(c.Lat, c.Lon) }

func TestObserveEstimatesNetworkThenCell(t *testing.T) {
	db := demoDB(t)
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	l := rtt.NewLearner(rtt.Config{Self: "fra", Locate: db.LatLon, Now: clk.now})
	client := demodb.Frankfurt.Client()
	for range 10 {
		l.Observe(client, 40*time.Millisecond)
	}
	l.Observe(client, 0) // ignored
	e, ok := l.Estimate(clientnet.Of(client), cellOf(demodb.Frankfurt), "fra", clk.now())
	if !ok || e.Scope != rtt.ScopeNetwork || e.Samples != 10 || e.RTT != 40*time.Millisecond {
		t.Fatalf("network estimate: %+v %v", e, ok)
	}
	// Another network of the same city falls back to the cell.
	neighbour := netip.MustParseAddr("85.214.200.1")
	e, ok = l.Estimate(clientnet.Of(neighbour), cellOf(demodb.Frankfurt), "fra", clk.now())
	if !ok || e.Scope != rtt.ScopeCell || e.RTT != 40*time.Millisecond {
		t.Fatalf("cell estimate: %+v %v", e, ok)
	}
	if _, ok := l.Estimate(clientnet.Of(demodb.Tokyo.Client()), cellOf(demodb.Tokyo), "fra", clk.now()); ok {
		t.Fatal("estimate for an unmeasured place")
	}
	if _, ok := l.Estimate(clientnet.Of(client), cellOf(demodb.Frankfurt), "tyo", clk.now()); ok {
		t.Fatal("estimate for a node never heard from")
	}
	// A later slow path moves the smoothed figure up, not all the way.
	l.Observe(client, 200*time.Millisecond)
	e, _ = l.Estimate(clientnet.Of(client), rtt.NoCell, "fra", clk.now())
	if e.RTT <= 40*time.Millisecond || e.RTT >= 200*time.Millisecond {
		t.Fatalf("smoothing: %v", e.RTT)
	}
	clk.add(11 * time.Minute)
	if _, ok := l.Estimate(clientnet.Of(client), cellOf(demodb.Frankfurt), "fra", clk.now()); ok {
		t.Fatal("stale measurement still used")
	}
}

func TestSummaryCarriesMeasurementsToPeers(t *testing.T) {
	db := demoDB(t)
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	fra := rtt.NewLearner(rtt.Config{Self: "fra", Locate: db.LatLon, Now: clk.now})
	iad := rtt.NewLearner(rtt.Config{Self: "iad", Locate: db.LatLon, Now: clk.now})
	v4, v6 := demodb.Frankfurt.Client(), demodb.Frankfurt.Networks[1].Addr().Next()
	for range 5 {
		fra.Observe(v4, 180*time.Millisecond)
		fra.Observe(v6, 90*time.Millisecond)
	}
	if err := iad.Merge("fra", fra.Summary()); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[netip.Addr]time.Duration{v4: 180 * time.Millisecond, v6: 90 * time.Millisecond} {
		e, ok := iad.Estimate(clientnet.Of(addr), rtt.NoCell, "fra", clk.now())
		if !ok || e.RTT != want || e.Samples != 5 || e.Scope != rtt.ScopeNetwork {
			t.Errorf("%s: %+v %v", addr, e, ok)
		}
	}
	if e, ok := iad.Estimate(clientnet.Of(netip.MustParseAddr("85.214.99.1")), cellOf(demodb.Frankfurt), "fra", clk.now()); !ok || e.Scope != rtt.ScopeCell {
		t.Errorf("cell not carried: %+v %v", e, ok)
	}
	// Own summaries are ignored; an empty summary forgets the peer.
	if err := iad.Merge("iad", fra.Summary()); err != nil {
		t.Fatal(err)
	}
	if _, ok := iad.Estimate(clientnet.Of(v4), rtt.NoCell, "iad", clk.now()); ok {
		t.Error("merged own summary")
	}
	iad.Merge("fra", nil)
	if _, ok := iad.Estimate(clientnet.Of(v4), rtt.NoCell, "fra", clk.now()); ok {
		t.Error("forgotten peer still answers")
	}
	// A peer that stops gossiping fades out.
	iad.Merge("fra", fra.Summary())
	clk.add(11 * time.Minute)
	if _, ok := iad.Estimate(clientnet.Of(v4), rtt.NoCell, "fra", clk.now()); ok {
		t.Error("stale peer summary still used")
	}
	if got := fra.Summary(); len(got) != 4 {
		t.Errorf("summary of stale data should be empty, got %d bytes", len(got))
	}
}

// A client controls the RTT its connection shows: it can hold back its
// ACKs, or echo an old TCP timestamp on a retransmission, and the kernel
// takes a round trip of minutes. Peers refuse a summary holding a figure
// over a minute as implausible, so one such client, measured on many
// connections and so first in the summary, made every peer refuse all of
// this node's measurements; and one sample of it weighed 1/8 in its cell.
func TestImplausibleSampleCannotSpoilTheSummary(t *testing.T) {
	db := demoDB(t)
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	fra := rtt.NewLearner(rtt.Config{Self: "fra", Locate: db.LatLon, Now: clk.now})
	iad := rtt.NewLearner(rtt.Config{Self: "iad", Locate: db.LatLon, Now: clk.now})
	honest, attacker := demodb.Frankfurt.Client(), netip.MustParseAddr("85.214.77.1")
	for range 3 {
		fra.Observe(honest, 20*time.Millisecond)
	}
	for range 50 {
		fra.Observe(attacker, 90*time.Second)
	}
	if err := iad.Merge("fra", fra.Summary()); err != nil {
		t.Fatalf("a peer refuses this node's summary: %v", err)
	}
	if e, ok := iad.Estimate(clientnet.Of(honest), rtt.NoCell, "fra", clk.now()); !ok || e.RTT != 20*time.Millisecond {
		t.Errorf("honest network at the peer: %+v %v", e, ok)
	}
	neighbour := netip.MustParseAddr("85.214.99.1")
	if e, ok := fra.Estimate(clientnet.Of(neighbour), cellOf(demodb.Frankfurt), "fra", clk.now()); !ok || e.RTT != 20*time.Millisecond {
		t.Errorf("the cell of an unmeasured network: %+v %v", e, ok)
	}
}

func TestSummaryStaysWithinBoundAndKeepsBestSampled(t *testing.T) {
	l := rtt.NewLearner(rtt.Config{Self: "a", SummaryBytes: 512})
	for i := range 3000 {
		l.Observe(netip.AddrFrom4([4]byte{11, byte(i >> 8), byte(i), 1}), time.Duration(i+1)*time.Millisecond)
	}
	busy := netip.MustParseAddr("11.200.1.1")
	for range 50 {
		l.Observe(busy, 7*time.Millisecond)
	}
	s := l.Summary()
	if len(s) > 512 {
		t.Fatalf("summary %d bytes over bound", len(s))
	}
	peer := rtt.NewLearner(rtt.Config{Self: "b"})
	if err := peer.Merge("a", s); err != nil {
		t.Fatal(err)
	}
	if e, ok := peer.Estimate(clientnet.Of(busy), rtt.NoCell, "a", time.Now()); !ok || e.RTT != 7*time.Millisecond {
		t.Fatalf("best-sampled network missing: %+v %v", e, ok)
	}
}

func TestMergeRejectsMalformedSummaries(t *testing.T) {
	good := func() []byte {
		l := rtt.NewLearner(rtt.Config{Self: "a"})
		l.Observe(netip.MustParseAddr("85.214.1.1"), 30*time.Millisecond)
		return l.Summary()
	}()
	bad := map[string][]byte{
		"magic":      append([]byte{'X'}, good[1:]...),
		"version":    append([]byte{'R', 9}, good[2:]...),
		"truncated":  good[:len(good)-2],
		"trailing":   append(append([]byte(nil), good...), 0),
		"huge count": {'R', 1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0},
		"family":     {'R', 1, 1, 5, 1, 2, 3, 10, 1, 0},
		"zero rtt":   {'R', 1, 1, 4, 1, 2, 3, 0, 1, 0},
		"no samples": {'R', 1, 1, 4, 1, 2, 3, 10, 0, 0},
		"cell range": {'R', 1, 0, 1, 0xff, 0xff, 0x03, 10, 1},
		"one byte":   {'R'},
		"oversized":  bytes.Repeat([]byte{0}, 70<<10),
	}
	l := rtt.NewLearner(rtt.Config{Self: "b"})
	if err := l.Merge("a", good); err != nil {
		t.Fatalf("good summary: %v", err)
	}
	for name, b := range bad {
		if err := l.Merge("a", b); !errors.Is(err, rtt.ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	// The last good summary survives the bad ones.
	if _, ok := l.Estimate(clientnet.Of(netip.MustParseAddr("85.214.1.9")), rtt.NoCell, "a", time.Now()); !ok {
		t.Error("good summary lost after bad merges")
	}
}

func FuzzMerge(f *testing.F) {
	l := rtt.NewLearner(rtt.Config{Self: "a"})
	l.Observe(netip.MustParseAddr("85.214.1.1"), 30*time.Millisecond)
	l.Observe(netip.MustParseAddr("2a01:4f8::1"), 30*time.Millisecond)
	f.Add(l.Summary())
	f.Add([]byte{'R', 1, 0, 0})
	f.Add([]byte{'R', 1, 1, 6, 1, 2, 3, 4, 5, 6, 7, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		peer := rtt.NewLearner(rtt.Config{Self: "b"})
		if err := peer.Merge("a", b); err != nil {
			return
		}
		// Whatever was accepted must be usable.
		peer.Estimate(clientnet.Of(netip.MustParseAddr("85.214.1.1")), 0, "a", time.Now())
	})
}

// Issue 13, defect 8: 30 churned nodes stayed in the learner after the mesh
// showed one member. Retain drops every peer the mesh no longer lists, and
// the memory they held goes with them.
func TestRetainForgetsNodesTheMeshForgot(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	self := rtt.NewLearner(rtt.Config{Self: "self", Now: clk.now})
	// Each churned peer gossips a full summary of distinct networks.
	summaryOf := func(id string, base byte) []byte {
		l := rtt.NewLearner(rtt.Config{Self: id, Now: clk.now, SummaryBytes: 4096})
		for i := range 200 {
			l.Observe(netip.AddrFrom4([4]byte{base, byte(i), 1, 1}), 40*time.Millisecond)
		}
		return l.Summary()
	}
	var ids []string
	sums := map[string][]byte{"stays": summaryOf("stays", 200)}
	for i := range 30 {
		id := fmt.Sprintf("churned-%d", i)
		ids = append(ids, id)
		sums[id] = summaryOf(id, byte(i+1))
	}
	empty := memtest.LiveHeap()
	for id, s := range sums {
		if err := self.Merge(id, s); err != nil {
			t.Fatal(err)
		}
	}
	if got := self.Peers(); len(got) != 31 {
		t.Fatalf("%d peers before churn", len(got))
	}
	full := memtest.LiveHeap()
	if n := self.Retain([]string{"self", "stays"}); n != 30 {
		t.Fatalf("retain forgot %d, want 30", n)
	}
	if got := self.Peers(); len(got) != 1 || got[0] != "stays" {
		t.Fatalf("peers after churn: %v", got)
	}
	for _, id := range ids {
		if _, ok := self.Estimate(clientnet.Of(netip.AddrFrom4([4]byte{1, 0, 1, 1})), rtt.NoCell, id, clk.now()); ok {
			t.Fatalf("%s still answers", id)
		}
	}
	if _, ok := self.Estimate(clientnet.Of(netip.AddrFrom4([4]byte{200, 0, 1, 1})), rtt.NoCell, "stays", clk.now()); !ok {
		t.Fatal("a current member was forgotten")
	}
	after := memtest.LiveHeap()
	held, left := int64(full)-int64(empty), int64(after)-int64(empty)
	if held < 100<<10 || left > held/4 {
		t.Errorf("31 peers held %d bytes; after forgetting 30, %d bytes remain", held, left)
	}
	// A member whose summary has aged out is dropped too: it has nothing
	// left to say, and keeping it only holds memory.
	clk.add(11 * time.Minute)
	if n := self.Retain([]string{"stays"}); n != 1 || len(self.Peers()) != 0 {
		t.Fatalf("stale member kept: forgot %d, peers %v", n, self.Peers())
	}
}

func TestCellOfNonsenseCoordinates(t *testing.T) {
	if c := rtt.CellOf(math.NaN(), 10); c != rtt.NoCell {
		t.Errorf("NaN latitude: cell %d", c)
	}
	for _, c := range []rtt.Cell{rtt.CellOf(1e9, -1e9), rtt.CellOf(math.Inf(-1), math.Inf(1)), rtt.CellOf(90, 180)} {
		if c >= rtt.NoCell {
			t.Errorf("out-of-range coordinates gave cell %d", c)
		}
	}
}

// A client controls the RTT its connections show (it can hold back its
// ACKs), and a new connection is sampled on its first request. A cell
// stands for every network in it that has no measurement of its own, so
// one network opening connections by the hundred must not outweigh the
// other networks of its cell: each network counts in its cell at most
// once per sampling interval, as one connection does.
func TestOneNetworkCannotCaptureItsCell(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	here := func(netip.Addr) (float64, float64, bool) { return 50.1, 8.7, true } // one cell for all
	l := rtt.NewLearner(rtt.Config{Self: "fra", Locate: here, Now: clk.now})
	attacker := netip.MustParseAddr("85.214.1.9")
	for s := range 60 {
		for range 100 { // a hundred fresh connections a second, each ACKing 2 s late
			l.Observe(attacker, 2*time.Second)
		}
		if s%10 == 0 { // twenty honest networks, each sampled every 10 s
			for n := range 20 {
				l.Observe(netip.AddrFrom4([4]byte{85, 215, byte(n), 1}), 20*time.Millisecond)
			}
		}
		clk.add(time.Second)
	}
	newcomer := netip.MustParseAddr("85.216.0.1")
	e, ok := l.Estimate(clientnet.Of(newcomer), rtt.CellOf(50.1, 8.7), "fra", clk.now())
	if !ok || e.Scope != rtt.ScopeCell {
		t.Fatalf("no cell estimate: %+v", e)
	}
	t.Logf("cell estimate %v over %d samples", e.RTT, e.Samples)
	if e.RTT > 500*time.Millisecond {
		t.Errorf("an unmeasured network of the cell is estimated at %v (over %d samples): one network's 6,000 samples of 2 s outweighed twenty networks at 20 ms", e.RTT, e.Samples)
	}
}
