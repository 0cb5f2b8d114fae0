package geo

import (
	"cmp"
	"encoding/json"
	"math"
	"net/http/httputil"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"perigee/geo/geoip"
	"perigee/geo/internal/clientnet"
	"perigee/geo/internal/shardcache"
	"perigee/geo/latency"
	"perigee/geo/rtt"
)

// Reason says why a decision came out as it did.
type Reason string

// Reasons.
const (
	ReasonLowestLatency Reason = "lowest-latency"   // the latency model and the load agree on the best node
	ReasonMeasured      Reason = "measured"         // round trips measured to this client overruled the model
	ReasonSticky        Reason = "sticky"           // the previous answer is within the margin of the best
	ReasonWithinMargin  Reason = "within-margin"    // this node is within the margin of the best: a move would not pay
	ReasonUnknownClient Reason = "unknown-location" // private or unlisted address: treated as next to this node
	ReasonNoEligible    Reason = "no-eligible-node" // every node excluded: this node serves
	ReasonWouldBounce   Reason = "would-bounce"     // the best node, without this node's measurements, would send the client back
)

// Why a candidate is excluded.
const (
	ExcludedDown       = "down"
	ExcludedDraining   = "draining"
	ExcludedOverloaded = "overloaded"
	ExcludedNoURL      = "no-public-url"
)

// Score is one candidate's expected latency for a client.
type Score struct {
	Node        string
	Region      string
	URL         string
	Addrs       []netip.Addr
	DistanceKm  float64       // great-circle, client to node; filled by Explain only
	ModelRTT    time.Duration // from the measured metro matrix and the last mile
	MeasuredRTT time.Duration // smoothed, from this node's or the candidate's measurements
	Samples     int
	Scope       string        // network or cell
	RTT         time.Duration // the model corrected by measurement
	LoadPenalty time.Duration
	Expected    time.Duration // RTT + LoadPenalty; lower is better
	Excluded    string        // why the node cannot take the client; empty if it can
}

// MarshalJSON writes durations as milliseconds, the unit people read.
func (s Score) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return json.Marshal(struct {
		Node        string       `json:"node"`
		Region      string       `json:"region,omitempty"`
		URL         string       `json:"url,omitempty"`
		Addrs       []netip.Addr `json:"addrs,omitempty"`
		DistanceKm  float64      `json:"distance_km"`
		ModelRTT    float64      `json:"model_rtt_ms"`
		MeasuredRTT float64      `json:"measured_rtt_ms,omitempty"`
		Samples     int          `json:"samples,omitempty"`
		Scope       string       `json:"scope,omitempty"`
		RTT         float64      `json:"rtt_ms"`
		LoadPenalty float64      `json:"load_penalty_ms"`
		Expected    float64      `json:"expected_ms"`
		Excluded    string       `json:"excluded,omitempty"`
	}{s.Node, s.Region, s.URL, s.Addrs, math.Round(s.DistanceKm), ms(s.ModelRTT), ms(s.MeasuredRTT), s.Samples, s.Scope,
		ms(s.RTT), ms(s.LoadPenalty), ms(s.Expected), s.Excluded})
}

// Decision is where one client should go.
type Decision struct {
	Client     netip.Addr     `json:"client"`
	Network    netip.Prefix   `json:"network"`
	Location   geoip.Location `json:"location"`
	Best       Node           `json:"best"`
	Self       bool           `json:"self"`
	Reason     Reason         `json:"reason"`
	Candidates []Score        `json:"candidates"` // eligible by Expected, then the excluded
	// Filled by Explain only, for people: where the model placed the
	// client, and the decision in a sentence.
	Placement *Placement `json:"placement,omitempty"`
	Why       string     `json:"why,omitempty"`
}

// Placement is how the latency model sees a client: spread over its nearest
// measured metros, widened by the database's accuracy radius.
type Placement struct {
	AccuracyKm int             `json:"accuracy_km"`
	Metros     []latency.Share `json:"metros"`
	LastMileKm float64         `json:"last_mile_km"`
}

// Router ranks the fleet for clients.
type Router struct {
	cfg       RouterConfig
	db        *geoip.DB
	fleet     Fleet
	learner   *rtt.Learner
	sticky    *shardcache.Cache[netip.Prefix, string]
	named     *namedBudget                                 // what those naming clients may add to sticky
	places    *shardcache.Cache[[2]float64, latency.Place] // node coordinates → place
	decisions *prometheus.CounterVec
	proxies   *shardcache.Cache[string, *httputil.ReverseProxy] // by public URL, built on first use
}

// NewRouter builds a router. db may be nil (every client is then served
// here) and so may learner (the map alone decides).
func NewRouter(cfg RouterConfig, db *geoip.DB, fleet Fleet, learner *rtt.Learner) *Router {
	cfg = cfg.withDefaults()
	return &Router{
		cfg:     cfg,
		db:      db,
		fleet:   fleet,
		learner: learner,
		sticky:  shardcache.New[netip.Prefix, string](cfg.StickyEntries),
		named:   newNamedBudget(cfg.StickyEntries),
		places:  shardcache.New[[2]float64, latency.Place](nodePlaces),
		proxies: shardcache.New[string, *httputil.ReverseProxy](nodeProxies),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perigee_geo_decisions_total",
			Help: "Steering decisions by how the client was answered and why.",
		}, []string{"action", "reason"}),
	}
}

// Collector exposes the decision counters for the node's registry.
func (rt *Router) Collector() prometheus.Collector { return rt.decisions }

// Count records one decision acted on: action is what the client got
// (redirect, alt-svc, proxy, serve, dns, nodes-api).
func (rt *Router) Count(action string, reason Reason) {
	rt.decisions.WithLabelValues(action, string(reason)).Inc()
}

// nodePlaces bounds the cache of node places; a fleet has far fewer
// distinct locations.
const nodePlaces = 4096

// nodeProxies bounds the proxies to other nodes kept for proxy steering,
// by public URL: members may change theirs, and a proxy is cheap to build
// again.
const nodeProxies = 1024

// Decide ranks the fleet for client and remembers the answer for its
// network, so the next decision only moves it for a clear gain. Every node
// with the same view gives the same answer, as GeoDNS and the nodes API
// need.
func (rt *Router) Decide(client netip.Addr) Decision { return rt.decide(client, true, false, nil) }

// DecideNamed is Decide for a client that namer names: a resolver, for
// its client subnet (which it may set at will) or for itself over UDP
// (whose source anyone can forge). A network not yet remembered is
// remembered only within namer's budget and everyone's (see namedBudget),
// so that no one can flush the answers remembered for everyone else.
func (rt *Router) DecideNamed(client, namer netip.Addr) Decision {
	return rt.decide(client, true, false, &namer)
}

// DecideHere is Decide for a request that has reached this node: sending
// it on costs the client a round trip and a new connection, so this node
// serves while it is within the margin of the best, and a remembered
// answer only chooses among the others. Otherwise nodes that each score
// themselves best pass a client along their remembered answers in a chain.
func (rt *Router) DecideHere(client netip.Addr) Decision {
	return rt.decide(client, true, true, nil)
}

// Explain is DecideHere without remembering the answer, for the admin API,
// and with the reasons spelt out: where the client was placed, each
// candidate's distance, and why the winner won.
func (rt *Router) Explain(client netip.Addr) Decision {
	d := rt.decide(client, false, true, nil)
	self := rt.fleet.Self()
	lat, lon := self.Lat, self.Lon
	if d.Location.Known {
		lat, lon = d.Location.Lat, d.Location.Lon
		p := rt.cfg.Matrix.Place(lat, lon, float64(d.Location.AccuracyKm))
		d.Placement = &Placement{AccuracyKm: d.Location.AccuracyKm, Metros: rt.cfg.Matrix.Shares(p), LastMileKm: math.Round(p.AccessKm)}
	}
	at := map[string]Node{self.ID: self}
	for _, n := range rt.fleet.Nodes() {
		at[n.ID] = n
	}
	for i := range d.Candidates {
		if n, ok := at[d.Candidates[i].Node]; ok {
			d.Candidates[i].DistanceKm = distanceKm(lat, lon, n.Lat, n.Lon)
		}
	}
	d.Why = why(d)
	return d
}

// decide ranks the fleet for client; commit remembers the answer, within
// the budget of namer if one named the client.
func (rt *Router) decide(client netip.Addr, commit, here bool, namer *netip.Addr) Decision {
	client = client.Unmap()
	now := time.Now()
	self := rt.fleet.Self()
	nodes := rt.fleet.Nodes()
	d := Decision{Client: client, Network: clientnet.Of(client), Location: rt.db.Lookup(client)}

	// An unplaced client reached us, so it is put next to us: other nodes
	// then cost what the path to them from here costs.
	var place latency.Place
	cell := rtt.NoCell
	if d.Location.Known {
		place = rt.cfg.Matrix.Place(d.Location.Lat, d.Location.Lon, float64(d.Location.AccuracyKm))
		cell = rtt.CellOf(d.Location.Lat, d.Location.Lon)
	} else {
		place = rt.nodePlace(self)
	}
	d.Candidates = make([]Score, 0, len(nodes)+1)
	add := func(n Node) {
		if byIDPos(d.Candidates, n.ID) >= 0 {
			return
		}
		d.Candidates = append(d.Candidates, rt.score(n, self, d.Network, cell, place, d.Location.Known, now))
	}
	add(self)
	for _, n := range nodes {
		add(n)
	}
	rank(d.Candidates)

	best := d.Candidates[0]
	switch {
	case best.Excluded != "":
		best = d.Candidates[byIDPos(d.Candidates, self.ID)]
		d.Reason = ReasonNoEligible
	case !d.Location.Known:
		d.Reason = ReasonUnknownClient
	case best.Node != modelBest(d.Candidates):
		d.Reason = ReasonMeasured
	default:
		d.Reason = ReasonLowestLatency
	}
	// Within the margin of the best, a request here stays here (see
	// DecideHere); otherwise the network's remembered answer is kept.
	if best.Excluded == "" && (!here || best.Node != self.ID) {
		margin := best.Expected + rt.cfg.margin(best.Expected)
		if s := d.Candidates[byIDPos(d.Candidates, self.ID)]; here && s.Excluded == "" && s.Expected <= margin {
			best, d.Reason = s, ReasonWithinMargin
		} else if prev, ok := rt.sticky.Get(d.Network); ok && prev != best.Node {
			if i := byIDPos(d.Candidates, prev); i >= 0 && d.Candidates[i].Excluded == "" && d.Candidates[i].Expected <= margin {
				best, d.Reason = d.Candidates[i], ReasonSticky
			}
		}
		if s := d.Candidates[byIDPos(d.Candidates, self.ID)]; here && best.Node != self.ID && rt.wouldSendBack(s, best, now) {
			best, d.Reason = s, ReasonWouldBounce
		}
	}
	if commit && best.Excluded == "" {
		// A changed answer takes no new slot; a new network may evict one.
		if prev, ok := rt.sticky.Get(d.Network); ok && prev != best.Node || !ok && (namer == nil || rt.named.admit(*namer, now)) {
			rt.sticky.Put(d.Network, best.Node)
		}
	}
	d.Self = best.Node == self.ID
	if d.Self {
		d.Best = self
	} else {
		for _, n := range nodes {
			if n.ID == best.Node {
				d.Best = n
				break
			}
		}
	}
	return d
}

// wouldSendBack reports whether the node to, to which this node would
// send a client, would send it back here: this node's own measurements of
// the client reach only the nodes that hold its summaries (its mesh
// region), and to, not among them, sees this node at its model cost.
func (rt *Router) wouldSendBack(self, to Score, now time.Time) bool {
	if self.Excluded != "" || self.Samples == 0 || rt.learner.Shares(to.Node, now) {
		return false
	}
	seen := self.ModelRTT + self.LoadPenalty
	return to.Expected > seen+rt.cfg.margin(seen)
}

func (rt *Router) score(n, self Node, network netip.Prefix, cell rtt.Cell, client latency.Place, located bool, now time.Time) Score {
	s := Score{Node: n.ID, Region: n.Region, URL: n.PublicURL, Addrs: n.Addrs}
	switch {
	case located:
		s.ModelRTT = rt.modelRTT(client, rt.nodePlace(n))
	case n.ID == self.ID:
		s.ModelRTT = rt.cfg.BaseRTT // the client is here
	case n.RTTFromSelf > 0:
		// The mesh's coordinates know the path from here better than the model.
		s.ModelRTT = rt.cfg.BaseRTT + n.RTTFromSelf
	default:
		s.ModelRTT = rt.modelRTT(client, rt.nodePlace(n))
	}
	s.RTT = s.ModelRTT
	if rt.learner != nil {
		if e, ok := rt.learner.Estimate(network, cell, n.ID, now); ok {
			s.MeasuredRTT, s.Samples, s.Scope = e.RTT, e.Samples, e.Scope
			s.RTT = rt.cfg.blend(s.ModelRTT, e.RTT, e.Samples)
		}
	}
	penalty, full := rt.cfg.loadPenalty(n)
	s.LoadPenalty = penalty
	s.Expected = s.RTT + penalty
	switch {
	case !n.Alive:
		s.Excluded = ExcludedDown
	case n.Draining:
		s.Excluded = ExcludedDraining
	case full:
		s.Excluded = ExcludedOverloaded
	case n.ID != self.ID && n.PublicURL == "":
		s.Excluded = ExcludedNoURL
	}
	return s
}

// rank orders eligible nodes first by expected latency; ties go to the lower
// ID so equal fleets give equal answers on every node. It sorts small keys
// and then moves each Score once: Scores are large and hold pointers, and
// sorting them directly cost more than the rest of a decision.
func rank(cands []Score) {
	order := make([]int, len(cands))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		a, b := &cands[i], &cands[j]
		if (a.Excluded == "") != (b.Excluded == "") {
			if a.Excluded == "" {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.Expected, b.Expected), cmp.Compare(a.Node, b.Node))
	})
	// Apply the permutation in place, one cycle at a time: position i
	// receives the Score that was at order[i].
	for i := range order {
		if order[i] < 0 {
			continue
		}
		first := cands[i]
		j := i
		for {
			next := order[j]
			order[j] = -1
			if next == i {
				cands[j] = first
				break
			}
			cands[j] = cands[next]
			j = next
		}
	}
}

// modelBest is the eligible node the model and load alone would pick.
func modelBest(cands []Score) string {
	best, bestCost := "", time.Duration(0)
	for _, c := range cands {
		if c.Excluded != "" {
			continue
		}
		cost := c.ModelRTT + c.LoadPenalty
		if best == "" || cost < bestCost || (cost == bestCost && c.Node < best) {
			best, bestCost = c.Node, cost
		}
	}
	return best
}

func byIDPos(cands []Score, id string) int {
	return slices.IndexFunc(cands, func(s Score) bool { return s.Node == id })
}
