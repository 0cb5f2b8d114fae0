package geo

import (
	"cmp"
	"encoding/json"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"perigee/geo/geoip"
	"perigee/geo/internal/clientnet"
	"perigee/geo/internal/shardcache"
	"perigee/geo/rtt"
)

// Reason says why a decision came out as it did.
type Reason string

// Reasons.
const (
	ReasonLowestLatency Reason = "lowest-latency"   // the map and the load agree on the best node
	ReasonMeasured      Reason = "measured"         // measured round trips overruled the map
	ReasonSticky        Reason = "sticky"           // the previous answer is within the margin of the best
	ReasonUnknownClient Reason = "unknown-location" // private or unlisted address: treated as next to this node
	ReasonNoEligible    Reason = "no-eligible-node" // every node excluded: this node serves
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
	DistanceKm  float64
	MapRTT      time.Duration // from distance alone
	MeasuredRTT time.Duration // smoothed, from this node's or the candidate's measurements
	Samples     int
	Scope       string        // network or cell
	RTT         time.Duration // the map corrected by measurement
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
		MapRTT      float64      `json:"map_rtt_ms"`
		MeasuredRTT float64      `json:"measured_rtt_ms,omitempty"`
		Samples     int          `json:"samples,omitempty"`
		Scope       string       `json:"scope,omitempty"`
		RTT         float64      `json:"rtt_ms"`
		LoadPenalty float64      `json:"load_penalty_ms"`
		Expected    float64      `json:"expected_ms"`
		Excluded    string       `json:"excluded,omitempty"`
	}{s.Node, s.Region, s.URL, s.Addrs, math.Round(s.DistanceKm), ms(s.MapRTT), ms(s.MeasuredRTT), s.Samples, s.Scope,
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
}

// Router ranks the fleet for clients.
type Router struct {
	cfg       RouterConfig
	db        *geoip.DB
	fleet     Fleet
	learner   *rtt.Learner
	sticky    *shardcache.Cache[netip.Prefix, string]
	decisions *prometheus.CounterVec
	proxies   sync.Map // public URL -> *httputil.ReverseProxy, built on first use
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

// Decide ranks the fleet for client and remembers the answer for its
// network, so the next decision only moves it for a clear gain.
func (rt *Router) Decide(client netip.Addr) Decision { return rt.decide(client, true) }

// Explain is Decide without remembering the answer, for the admin API.
func (rt *Router) Explain(client netip.Addr) Decision { return rt.decide(client, false) }

func (rt *Router) decide(client netip.Addr, commit bool) Decision {
	client = client.Unmap()
	now := time.Now()
	self := rt.fleet.Self()
	nodes := rt.fleet.Nodes()
	d := Decision{Client: client, Network: clientnet.Of(client), Location: rt.db.Lookup(client)}

	// An unplaced client reached us, so it is put next to us: other nodes
	// then cost what the path to them from here costs.
	lat, lon, cell := self.Lat, self.Lon, rtt.NoCell
	if d.Location.Known {
		lat, lon, cell = d.Location.Lat, d.Location.Lon, rtt.CellOf(d.Location.Lat, d.Location.Lon)
	}
	d.Candidates = make([]Score, 0, len(nodes)+1)
	add := func(n Node) {
		if byIDPos(d.Candidates, n.ID) >= 0 {
			return
		}
		d.Candidates = append(d.Candidates, rt.score(n, self, d.Network, cell, lat, lon, d.Location.Known, now))
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
	case best.Node != mapBest(d.Candidates):
		d.Reason = ReasonMeasured
	default:
		d.Reason = ReasonLowestLatency
	}
	if prev, ok := rt.sticky.Get(d.Network); ok && prev != best.Node && best.Excluded == "" {
		if i := byIDPos(d.Candidates, prev); i >= 0 && d.Candidates[i].Excluded == "" &&
			d.Candidates[i].Expected <= best.Expected+rt.cfg.margin(best.Expected) {
			best = d.Candidates[i]
			d.Reason = ReasonSticky
		}
	}
	if commit && best.Excluded == "" {
		if prev, ok := rt.sticky.Get(d.Network); !ok || prev != best.Node {
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

func (rt *Router) score(n, self Node, network netip.Prefix, cell rtt.Cell, lat, lon float64, located bool, now time.Time) Score {
	s := Score{Node: n.ID, Region: n.Region, URL: n.PublicURL, Addrs: n.Addrs, DistanceKm: distanceKm(lat, lon, n.Lat, n.Lon)}
	s.MapRTT = rt.cfg.mapRTT(s.DistanceKm)
	if !located && n.ID != self.ID && n.RTTFromSelf > 0 {
		// The mesh's coordinates know the path from here better than the map.
		s.MapRTT = rt.cfg.BaseRTT + n.RTTFromSelf
	}
	s.RTT = s.MapRTT
	if rt.learner != nil {
		if e, ok := rt.learner.Estimate(network, cell, n.ID, now); ok {
			s.MeasuredRTT, s.Samples, s.Scope = e.RTT, e.Samples, e.Scope
			s.RTT = rt.cfg.blend(s.MapRTT, e.RTT, e.Samples)
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

// mapBest is the eligible node the map and load alone would pick.
func mapBest(cands []Score) string {
	best, bestCost := "", time.Duration(0)
	for _, c := range cands {
		if c.Excluded != "" {
			continue
		}
		cost := c.MapRTT + c.LoadPenalty
		if best == "" || cost < bestCost || (cost == bestCost && c.Node < best) {
			best, bestCost = c.Node, cost
		}
	}
	return best
}

func byIDPos(cands []Score, id string) int {
	return slices.IndexFunc(cands, func(s Score) bool { return s.Node == id })
}
