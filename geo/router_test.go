package geo_test

import (
	"math"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"perigee/geo"
	"perigee/geo/demodb"
	"perigee/geo/geoip"
	"perigee/geo/rtt"
	"perigee/memtest"
)

func node(id string, c demodb.City, url string) geo.Node {
	return geo.Node{ID: id, Region: c.Name, Lat: c.Lat, Lon: c.Lon, PublicURL: url, Alive: true, Capacity: 100,
		Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}
}

// threeNodes is the fleet most tests use: Tokyo, Frankfurt and Virginia.
func threeNodes(self string) *geo.StaticFleet {
	return mustFleet(self,
		node("tyo", demodb.Tokyo, "https://tyo.example.net"),
		node("fra", demodb.Frankfurt, "https://fra.example.net"),
		node("iad", demodb.Virginia, "https://iad.example.net"))
}

func mustFleet(self string, nodes ...geo.Node) *geo.StaticFleet {
	f, err := geo.NewStaticFleet(self, nodes)
	if err != nil {
		panic(err)
	}
	return f
}

func openDemo(t testing.TB) *geoip.DB {
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

func excluded(d geo.Decision, id string) string {
	for _, c := range d.Candidates {
		if c.Node == id {
			return c.Excluded
		}
	}
	return "missing"
}

func TestClientsLandOnNearestNode(t *testing.T) {
	rt := geo.NewRouter(geo.RouterConfig{}, openDemo(t), threeNodes("fra"), nil)
	want := map[netip.Addr]string{
		demodb.Tokyo.Client():                      "tyo",
		demodb.Tokyo.Networks[1].Addr().Next():     "tyo",
		demodb.Frankfurt.Client():                  "fra",
		demodb.Frankfurt.Networks[1].Addr().Next(): "fra",
		demodb.Virginia.Client():                   "iad",
		demodb.Virginia.Networks[1].Addr().Next():  "iad",
		demodb.SaoPaulo.Client():                   "iad",
		demodb.Sydney.Client():                     "tyo",
		demodb.Singapore.Client():                  "tyo",
		demodb.London.Client():                     "fra",
	}
	for client, id := range want {
		d := rt.Decide(client)
		if d.Best.ID != id || d.Reason != geo.ReasonLowestLatency || d.Self != (id == "fra") {
			t.Errorf("%s: best %s (%s, self %v), want %s", client, d.Best.ID, d.Reason, d.Self, id)
		}
		if len(d.Candidates) != 3 || d.Candidates[0].Node != id || d.Candidates[0].Expected > d.Candidates[1].Expected {
			t.Errorf("%s: candidates not ranked: %+v", client, d.Candidates)
		}
	}
	// Same fleet, same answer, from any node.
	other := geo.NewRouter(geo.RouterConfig{}, openDemo(t), threeNodes("tyo"), nil)
	if d := other.Decide(demodb.Virginia.Client()); d.Best.ID != "iad" || d.Best.PublicURL != "https://iad.example.net" {
		t.Errorf("from tyo: %+v", d.Best)
	}
}

// The fleet of issue 18: by distance alone Johannesburg goes to São Paulo;
// measured round trips send it to Frankfurt, and the explanation says how.
func TestModelFollowsMeasuredPathsNotDistance(t *testing.T) {
	f := mustFleet("gru",
		node("fra", demodb.Frankfurt, "https://fra.example.net"),
		node("iad", demodb.Virginia, "https://iad.example.net"),
		node("tyo", demodb.Tokyo, "https://tyo.example.net"),
		node("gru", demodb.SaoPaulo, "https://gru.example.net"))
	rt := geo.NewRouter(geo.RouterConfig{}, openDemo(t), f, nil)
	d := rt.Explain(demodb.Johannesburg.Client())
	if d.Best.ID != "fra" || d.Reason != geo.ReasonLowestLatency {
		t.Fatalf("Johannesburg: %s (%s) %+v", d.Best.ID, d.Reason, d.Candidates)
	}
	var fra, gru geo.Score
	for _, c := range d.Candidates {
		switch c.Node {
		case "fra":
			fra = c
		case "gru":
			gru = c
		}
	}
	if gru.DistanceKm >= fra.DistanceKm {
		t.Fatalf("test premise: São Paulo %0.f km, Frankfurt %.0f km", gru.DistanceKm, fra.DistanceKm)
	}
	if d.Placement == nil || d.Placement.Metros[0].City != "Johannesburg" || !strings.Contains(d.Why, "Johannesburg") ||
		!strings.Contains(d.Why, "fra: ") || !strings.Contains(d.Why, "lowest expected latency") {
		t.Errorf("explanation: %+v %q", d.Placement, d.Why)
	}
	if plain := rt.Decide(demodb.Johannesburg.Client()); plain.Why != "" || plain.Placement != nil || plain.Candidates[0].DistanceKm != 0 {
		t.Errorf("Decide did the explaining work: %+v", plain)
	}
}

func TestUnavailableNodesLoseTheirClients(t *testing.T) {
	f := threeNodes("fra")
	rt := geo.NewRouter(geo.RouterConfig{}, openDemo(t), f, nil)
	tokyo := demodb.Tokyo.Client()
	if d := rt.Decide(tokyo); d.Best.ID != "tyo" {
		t.Fatalf("before: %s", d.Best.ID)
	}
	cases := []struct {
		change func(*geo.Node)
		why    string
	}{
		{func(n *geo.Node) { n.Alive = false }, geo.ExcludedDown},
		{func(n *geo.Node) { n.Draining = true }, geo.ExcludedDraining},
		{func(n *geo.Node) { n.InFlight = 99 }, geo.ExcludedOverloaded},
		{func(n *geo.Node) { n.PublicURL = "" }, geo.ExcludedNoURL},
	}
	for _, c := range cases {
		f.Update("tyo", c.change)
		d := rt.Decide(tokyo)
		if d.Best.ID == "tyo" || excluded(d, "tyo") != c.why {
			t.Errorf("%s: still on %s (tyo excluded %q)", c.why, d.Best.ID, excluded(d, "tyo"))
		}
		// The answer remembered for the network must not pin a gone node.
		f.Update("tyo", func(n *geo.Node) { *n = node("tyo", demodb.Tokyo, "https://tyo.example.net") })
		// Healthy again: tyo beats the stand-in by far more than the margin.
		if d := rt.Decide(tokyo); d.Best.ID != "tyo" {
			t.Errorf("%s: healthy again but client kept on %s", c.why, d.Best.ID)
		}
	}
}

func TestLoadPenaltyShiftsClientsBeforeOverload(t *testing.T) {
	f := threeNodes("fra")
	rt := geo.NewRouter(geo.RouterConfig{}, openDemo(t), f, nil)
	london := demodb.London.Client()
	base := rt.Explain(london).Candidates[0]
	f.Update("fra", func(n *geo.Node) { n.InFlight = 50 })
	d := rt.Explain(london)
	if d.Best.ID != "fra" || d.Candidates[0].LoadPenalty != 10*time.Millisecond || d.Candidates[0].Expected != base.Expected+10*time.Millisecond {
		t.Fatalf("half-full penalty: %+v", d.Candidates[0])
	}
	f.Update("fra", func(n *geo.Node) { n.InFlight = 94 }) // penalty 156ms: Virginia is closer in time
	if d := rt.Explain(london); d.Best.ID != "iad" {
		t.Fatalf("loaded fra kept London: %+v", d.Candidates)
	}
}

func TestAllExcludedServesHere(t *testing.T) {
	f := threeNodes("fra")
	for _, id := range []string{"tyo", "fra", "iad"} {
		f.Update(id, func(n *geo.Node) { n.Alive = false })
	}
	d := geo.NewRouter(geo.RouterConfig{}, openDemo(t), f, nil).Decide(demodb.Tokyo.Client())
	if !d.Self || d.Best.ID != "fra" || d.Reason != geo.ReasonNoEligible {
		t.Fatalf("%+v", d)
	}
}

// Node places are cached by coordinates, and a NaN coordinate (a fleet
// source that let one through) is a map key that is never found again
// and never deleted: each decision added an entry for such a node, and
// evicting one to make room could not remove it, so the cache grew
// without bound.
func TestNodeWithoutCoordinatesCostsNoMemoryPerDecision(t *testing.T) {
	lost := node("lost", demodb.Tokyo, "https://lost.example.net")
	lost.Lat, lost.Lon = math.NaN(), math.NaN()
	fleet := mustFleet("fra", node("fra", demodb.Frankfurt, "https://fra.example.net"), lost)
	rt := geo.NewRouter(geo.RouterConfig{}, openDemo(t), fleet, nil)
	client := demodb.Tokyo.Client()
	const decisions = 100_000
	rt.Decide(client)
	before := memtest.LiveHeap()
	for range decisions {
		rt.Decide(client)
	}
	grew := memtest.LiveHeap() - before
	t.Logf("heap grew %d KiB over %d decisions", grew>>10, decisions)
	if grew > 1<<20 {
		t.Errorf("the heap grew by %d MiB over %d decisions with a node at NaN", grew>>20, decisions)
	}
	if d := rt.Decide(client); d.Best.ID != "fra" {
		t.Errorf("a node nowhere won: %+v", d.Best)
	}
}

func TestUnknownClientsAreServedHere(t *testing.T) {
	f := threeNodes("iad")
	rt := geo.NewRouter(geo.RouterConfig{}, openDemo(t), f, nil)
	for _, ip := range []string{"10.0.0.7", "192.168.1.1", "8.8.8.8", "::1", demodb.CountryOnly.Addr().Next().String()} {
		d := rt.Decide(netip.MustParseAddr(ip))
		if !d.Self || d.Reason != geo.ReasonUnknownClient || d.Location.Known {
			t.Errorf("%s: %s %s", ip, d.Best.ID, d.Reason)
		}
	}
	// If this node cannot serve, they go where the path from here is
	// shortest: the mesh's RTT beats the map when it is known.
	f.Update("iad", func(n *geo.Node) { n.Draining = true })
	if d := rt.Decide(netip.MustParseAddr("10.0.0.8")); d.Best.ID != "fra" {
		t.Errorf("draining self: %s", d.Best.ID)
	}
	f.Update("tyo", func(n *geo.Node) { n.RTTFromSelf = 20 * time.Millisecond })
	if d := rt.Decide(netip.MustParseAddr("10.0.1.8")); d.Best.ID != "tyo" {
		t.Errorf("mesh RTT ignored: %+v", d.Candidates)
	}
	// No database at all still answers.
	if d := geo.NewRouter(geo.RouterConfig{}, nil, threeNodes("tyo"), nil).Decide(demodb.Virginia.Client()); !d.Self || d.Location.Source != geoip.NoDatabase {
		t.Errorf("no database: %+v", d)
	}
}

func TestBadMeasuredRTTsMoveClientsAway(t *testing.T) {
	db := openDemo(t)
	// fra measured its Frankfurt clients over a terrible path for a few
	// minutes (a network weighs in its cell once per 10 s) and gossips it.
	now := time.Now()
	fraLearner := rtt.NewLearner(rtt.Config{Self: "fra", Locate: db.LatLon, Now: func() time.Time { return now }})
	for range 20 {
		fraLearner.Observe(demodb.Frankfurt.Client(), 250*time.Millisecond)
		now = now.Add(10 * time.Second)
	}
	iadLearner := rtt.NewLearner(rtt.Config{Self: "iad", Locate: db.LatLon})
	rt := geo.NewRouter(geo.RouterConfig{}, db, threeNodes("iad"), iadLearner)
	if d := rt.Decide(demodb.Frankfurt.Client()); d.Best.ID != "fra" {
		t.Fatalf("before measurement: %s", d.Best.ID)
	}
	if err := iadLearner.Merge("fra", fraLearner.Summary()); err != nil {
		t.Fatal(err)
	}
	d := rt.Decide(demodb.Frankfurt.Client())
	if d.Best.ID != "iad" || d.Reason != geo.ReasonMeasured {
		t.Fatalf("measured network: %s (%s) %+v", d.Best.ID, d.Reason, d.Candidates)
	}
	var fra geo.Score
	for _, c := range d.Candidates {
		if c.Node == "fra" {
			fra = c
		}
	}
	if fra.Scope != rtt.ScopeNetwork || fra.Samples != 20 || fra.MeasuredRTT != 250*time.Millisecond || fra.RTT <= fra.ModelRTT {
		t.Errorf("fra score: %+v", fra)
	}
	// A neighbouring network nobody measured moves too: same cell.
	if d := rt.Decide(netip.MustParseAddr("85.214.77.1")); d.Best.ID != "iad" || d.Reason != geo.ReasonMeasured {
		t.Errorf("same cell: %s (%s)", d.Best.ID, d.Reason)
	}
	// London is elsewhere on the map and keeps Frankfurt.
	if d := rt.Decide(demodb.London.Client()); d.Best.ID != "fra" {
		t.Errorf("london: %s", d.Best.ID)
	}
	// Good measurements from iad itself reinforce the move; good ones from
	// fra bring the client back.
	for range 20 {
		fraLearner.Observe(demodb.Frankfurt.Client(), 2*time.Millisecond)
	}
	iadLearner.Merge("fra", fraLearner.Summary())
	if d := rt.Decide(demodb.Frankfurt.Client()); d.Best.ID != "fra" {
		t.Errorf("after recovery: %s %+v", d.Best.ID, d.Candidates)
	}
}

func TestHysteresisKeepsClientOnNearlyEqualNode(t *testing.T) {
	// Two nodes a few km apart in Frankfurt, seen from Tokyo.
	f := mustFleet("tyo",
		node("tyo", demodb.Tokyo, "https://tyo.example.net"),
		node("a", demodb.Frankfurt, "https://a.example.net"),
		node("b", demodb.City{Lat: 50.05, Lon: 8.57}, "https://b.example.net"))
	rt := geo.NewRouter(geo.RouterConfig{}, openDemo(t), f, nil)
	client := demodb.Frankfurt.Client()
	if d := rt.Decide(client); d.Best.ID != "a" || d.Reason != geo.ReasonLowestLatency {
		t.Fatalf("first: %s %s", d.Best.ID, d.Reason)
	}
	// a gets a little busier: b is now slightly better, within the margin.
	f.Update("a", func(n *geo.Node) { n.InFlight = 20 })
	for range 3 {
		d := rt.Decide(client)
		if d.Best.ID != "a" || d.Reason != geo.ReasonSticky || d.Candidates[0].Node != "b" {
			t.Fatalf("bounced: %s %s %+v", d.Best.ID, d.Reason, d.Candidates)
		}
	}
	// A network with no history gets the strictly best node.
	other := netip.MustParseAddr("85.214.9.9")
	if d := rt.Decide(other); d.Best.ID != "b" {
		t.Fatalf("fresh network: %s", d.Best.ID)
	}
	// A clear gain moves the client, and the new answer then sticks.
	f.Update("a", func(n *geo.Node) { n.InFlight = 60 })
	if d := rt.Decide(client); d.Best.ID != "b" {
		t.Fatalf("clear gain ignored: %s", d.Best.ID)
	}
	f.Update("a", func(n *geo.Node) { n.InFlight = 0 })
	f.Update("b", func(n *geo.Node) { n.InFlight = 5 })
	if d := rt.Decide(client); d.Best.ID != "b" || d.Reason != geo.ReasonSticky {
		t.Fatalf("did not stick to the new node: %s %s", d.Best.ID, d.Reason)
	}
	// Explain shows the sticky answer but never sets one.
	fresh := netip.MustParseAddr("85.214.10.10")
	f.Update("b", func(n *geo.Node) { n.InFlight = 0 })
	rt.Explain(fresh)
	f.Update("a", func(n *geo.Node) { n.InFlight = 20 })
	if d := rt.Decide(fresh); d.Best.ID != "b" || d.Reason == geo.ReasonSticky {
		t.Fatalf("explain remembered an answer: %s %s", d.Best.ID, d.Reason)
	}
}

func TestStaticFleetNeedsSelf(t *testing.T) {
	if _, err := geo.NewStaticFleet("x", []geo.Node{node("a", demodb.Tokyo, "")}); err == nil {
		t.Fatal("fleet without self accepted")
	}
	f := threeNodes("iad")
	if f.Update("nope", func(*geo.Node) {}) {
		t.Fatal("updated a missing node")
	}
	if f.Self().ID != "iad" || len(f.Nodes()) != 3 {
		t.Fatalf("%+v", f.Self())
	}
}

// The local fleet: three nodes on one machine, so the mesh measures every
// path as a fraction of a millisecond and a local client is unplaced. Each
// node once sent the client's network on while it was busy; the load is
// gone, and every node now scores itself best for the client. A remembered
// answer must not send the client on from a node that scores best: that
// made a chain iad-2 → iad-1 → fra-1, each hop a redirect counted as load.
func TestBestNodeServesDespiteStickyAnswerElsewhere(t *testing.T) {
	ids := []string{"iad-2", "iad-1", "fra-1"}
	next := map[string]string{"iad-2": "iad-1", "iad-1": "fra-1", "fra-1": "iad-2"}
	fleets := map[string]*geo.StaticFleet{}
	routers := map[string]*geo.Router{}
	for _, self := range ids {
		var nodes []geo.Node
		for _, id := range ids {
			n := node(id, demodb.Virginia, "https://"+id+".example.net")
			if id != self {
				n.RTTFromSelf = 200 * time.Microsecond
			}
			nodes = append(nodes, n)
		}
		fleets[self] = mustFleet(self, nodes...)
		routers[self] = geo.NewRouter(geo.RouterConfig{}, nil, fleets[self], nil)
	}
	client := netip.MustParseAddr("127.0.0.1")
	for _, self := range ids {
		// Busy: everyone else but next is busy too, so next takes the client.
		for _, id := range ids {
			if id != next[self] {
				fleets[self].Update(id, func(n *geo.Node) { n.InFlight = 90 })
			}
		}
		if d := routers[self].Decide(client); d.Best.ID != next[self] {
			t.Fatalf("%s busy: sent the client to %s, want %s", self, d.Best.ID, next[self])
		}
		for _, id := range ids {
			fleets[self].Update(id, func(n *geo.Node) { n.InFlight = 0 })
		}
	}
	// Follow the redirects from iad-2.
	at, hops := "iad-2", []string{"iad-2"}
	for range len(ids) {
		d := routers[at].DecideHere(client)
		if d.Self {
			break
		}
		at = d.Best.ID
		hops = append(hops, at)
	}
	if len(hops) != 1 {
		t.Fatalf("client redirected along %v; the first node scores best and should serve", hops)
	}
	// Within the margin of the best, this node serves too: a redirect costs
	// the client a round trip and a new connection, more than it gains.
	fleets["iad-2"].Update("iad-2", func(n *geo.Node) { n.InFlight = 10 }) // 1.1ms penalty
	if d := routers["iad-2"].DecideHere(client); !d.Self || d.Reason != geo.ReasonWithinMargin {
		t.Fatalf("sent away for %v: %+v", d.Reason, d.Candidates)
	}
	// A DNS answer costs no redirect: it names the best node, the same
	// from every node with the same view.
	if d := routers["iad-2"].Decide(netip.MustParseAddr("10.9.9.9")); d.Self { // a network with no history
		t.Fatalf("Decide favoured the deciding node: %+v", d.Candidates)
	}
}
