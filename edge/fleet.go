package edge

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"perigee/edge/admin"
	"perigee/edge/config"
	"perigee/edge/exchange"
	"perigee/edge/metrics"
	"perigee/geo"
	"perigee/geo/geodns"
	"perigee/geo/geoip"
	"perigee/geo/rtt"
	"perigee/mesh"
	"perigee/policies"
	"perigee/telemetry"
)

// fleet is the node's place among its peers: the mesh cluster, the geo
// router with its GeoIP database and client-RTT learner, the nodes API,
// GeoDNS and country tagging. Each is there only when the config has its
// section; without them the node is a fleet and a region of one.
type fleet struct {
	log *slog.Logger

	cluster  *mesh.Cluster    // with a mesh section
	keyed    bool             // the mesh has a keyring, which a reload rereads
	router   *geo.Router      // with a geo section
	learner  *rtt.Learner     // client round trips, with geo
	static   *geo.StaticFleet // the configured fleet, when there is no mesh
	nodesAPI http.Handler     // GET /.well-known/perigee/nodes, with geo
	country  *countryTagger   // sets X-Perigee-Country, with geo
	trusted  []netip.Prefix   // geo.trusted_proxies: peers whose forwarding headers are believed
	dnsAddr  string           // where GeoDNS listens, with geo.dns

	stop context.CancelFunc
	done sync.WaitGroup
}

// start joins the mesh, opens the GeoIP database, builds the router and
// serves GeoDNS, as the config asks. The mesh gossips the node's
// one-second samples; its events go to ship.
func (f *fleet) start(cfg *config.Config, version string, sampler *metrics.Sampler, m *metrics.Metrics, ship *shipping, a *admin.API) error {
	ctx, stop := context.WithCancel(context.Background())
	f.stop = stop
	if err := f.startMesh(ctx, cfg, version, sampler, m, ship, a); err != nil {
		return err
	}
	return f.startGeo(ctx, cfg, m, a)
}

func (f *fleet) startMesh(ctx context.Context, cfg *config.Config, version string, sampler *metrics.Sampler, m *metrics.Metrics, ship *shipping, a *admin.API) error {
	if cfg.Mesh == nil {
		return nil
	}
	meta := mesh.NodeMeta{
		ID: cfg.Node.ID, Region: cfg.Node.Region, Zone: cfg.Node.Zone,
		Lat: cfg.Node.Location.Lat, Lon: cfg.Node.Location.Lon,
		PublicURL: cfg.Node.PublicURL, Capacity: cfg.Node.Capacity, Version: version,
	}
	c, err := mesh.Start(ctx, *cfg.Mesh, meta, sampler.Latest, f.log) // the mesh names itself in its logs
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Pos("mesh"), err)
	}
	f.cluster, f.keyed = c, cfg.Mesh.KeyringFile != ""
	f.done.Go(func() { f.forwardEvents(ctx, ship) })
	a.HandleJSON("GET /members", func() any { return memberViews(c.Members()) })
	m.Gauges("perigee_mesh_members", "Members of the mesh this node knows, by state (alive, suspect, dead, left).", []string{"state"}, func(emit metrics.Emit) {
		count := map[mesh.State]int{mesh.StateAlive: 0, mesh.StateSuspect: 0, mesh.StateDead: 0, mesh.StateLeft: 0}
		for _, mb := range c.Members() {
			count[mb.State]++
		}
		for st, n := range count {
			emit(float64(n), string(st))
		}
	})
	m.Gauges("perigee_mesh_leader", "1 while this node leads its region (runs its scale decisions).", nil, func(emit metrics.Emit) {
		v := 0.0
		if c.IsLeader() {
			v = 1
		}
		emit(v)
	})
	m.Counters("perigee_mesh_messages_dropped_total", "Mesh messages dropped: received malformed, of a kind or version this release does not know, or not sent because the send queue was full.", []string{"reason"}, func(emit metrics.Emit) {
		emit(float64(c.DroppedMessages()), "malformed")
		emit(float64(c.UnknownMessages()), "unknown")
		emit(float64(c.UnsentMessages()), "queue_full")
	})
	m.Counters("perigee_mesh_streams_cut_total", "Gossip TCP streams cut for carrying more than a push/pull can, or past the streams' byte budget.", nil, func(emit metrics.Emit) {
		emit(float64(c.CutStreams()))
	})
	a.HandleJSON("GET /regions", func() any { return c.Regions() })
	return nil
}

// memberView is what GET /members shows of a member: who, where, how it is
// and how fresh its load report is; not the mesh's internals (coordinates,
// encoded extras).
type memberView struct {
	ID               string    `json:"id"`
	Region           string    `json:"region"`
	Zone             string    `json:"zone,omitempty"`
	PublicURL        string    `json:"public_url,omitempty"`
	Addr             string    `json:"addr"`
	State            string    `json:"state"`
	Self             bool      `json:"self,omitempty"`
	Version          string    `json:"version,omitempty"`
	Stale            bool      `json:"stale"`
	ReportAgeSeconds *float64  `json:"report_age_seconds,omitempty"` // absent before its first report
	RPS              float64   `json:"rps"`
	InFlight         int64     `json:"in_flight"`
	CPUCores         float64   `json:"cpu_cores"`
	ReportTime       time.Time `json:"report_time,omitzero"`
}

func memberViews(ms []mesh.Member) []memberView {
	out := make([]memberView, 0, len(ms))
	for _, mb := range ms {
		v := memberView{
			ID: mb.Meta.ID, Region: mb.Meta.Region, Zone: mb.Meta.Zone, PublicURL: mb.Meta.PublicURL,
			Addr: mb.Addr, State: string(mb.State), Self: mb.Self, Version: mb.Meta.Version, Stale: mb.Stale,
		}
		if mb.HasReport {
			age := mb.ReportAge.Seconds()
			v.ReportAgeSeconds = &age
			v.RPS, v.InFlight, v.CPUCores, v.ReportTime = mb.Report.RPS, mb.Report.InFlight, mb.Report.CPU, mb.Report.Time
		}
		out = append(out, v)
	}
	return out
}

// forwardEvents logs the mesh's events and ships them until ctx ends; the
// mesh never closes the channel.
func (f *fleet) forwardEvents(ctx context.Context, ship *shipping) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-f.cluster.Events():
			f.log.Info("mesh event", "kind", ev.Kind, "fields", ev.Fields)
			ship.event(ev)
		}
	}
}

// close tells the fleet this node is going, so that peers show it as left
// at once rather than dead after the failure-detection time, then ends
// the fleet's background work.
func (f *fleet) close() {
	if f.cluster != nil {
		if err := f.cluster.Leave(2 * time.Second); err != nil {
			f.log.Warn("leaving the mesh", "err", err)
		}
		f.cluster.Shutdown()
	}
	if f.stop != nil {
		f.stop()
	}
	f.done.Wait()
}

// reloadKeyring applies the mesh's keyring file to the running cluster.
func (f *fleet) reloadKeyring() error {
	if f.cluster == nil || !f.keyed {
		return nil
	}
	return f.cluster.ReloadKeyring()
}

// leadership says whether this node runs its region's scale decisions,
// and under which term. A node without a mesh is a region of one and leads
// under term 0.
func (f *fleet) leadership() (uint64, bool) {
	if f.cluster == nil {
		return 0, true
	}
	return f.cluster.Leadership()
}

// regionFigures are the region's merged figures from gossip; nil without a
// mesh, which the policies read as "this node alone".
func (f *fleet) regionFigures(region string) map[string]policies.ServiceFigures {
	if f.cluster == nil {
		return nil
	}
	view := f.cluster.Region(region)
	out := make(map[string]policies.ServiceFigures, len(view.Services))
	for name, s := range view.Services {
		out[name] = policies.FiguresFrom(s, s.Latency.Mean())
	}
	return out
}

// startGeo opens the GeoIP database and builds the router over the mesh's
// members, or over the static node list when there is no mesh.
func (f *fleet) startGeo(ctx context.Context, cfg *config.Config, m *metrics.Metrics, a *admin.API) error {
	g := cfg.Geo
	if g == nil {
		return nil
	}
	log := f.log.With("component", "geo")
	db, err := geoip.Open(g.Database, log)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Pos("geo", "database"), err)
	}
	f.done.Go(func() { db.Watch(ctx, 5*time.Second) })
	rc, err := g.RouterConfig()
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Pos("geo"), err)
	}
	rc.Log = log
	rc.Client = resolvedClient
	f.learner = rtt.NewLearner(rtt.Config{Self: cfg.Node.ID, Locate: db.LatLon, SummaryBytes: mesh.MaxExtraValue})
	var members geo.Fleet
	if f.cluster != nil {
		members = &meshFleet{cluster: f.cluster, learner: f.learner, addrs: staticAddrs(g)}
	} else {
		sf, err := geo.NewStaticFleet(cfg.Node.ID, staticNodes(cfg))
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.Pos("geo", "nodes"), err)
		}
		f.static = sf
		members = sf
	}
	f.country, f.trusted = &countryTagger{db: db}, rc.Trusted
	f.router = geo.NewRouter(rc, db, members, f.learner)
	f.nodesAPI = f.router.NodesHandler()
	m.Registry.MustRegister(f.router.Collector())
	a.Handle("GET /geo/decide", f.router.ExplainHandler())
	if g.DNS.Listen != "" {
		return f.startGeoDNS(ctx, cfg)
	}
	return nil
}

func (f *fleet) startGeoDNS(ctx context.Context, cfg *config.Config) error {
	d := cfg.Geo.DNS
	h, err := geodns.NewHandler(d, f.router, f.log.With("component", "geodns"))
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Pos("geo", "dns"), err)
	}
	pc, err := net.ListenPacket("udp", d.Listen)
	if err != nil {
		return fmt.Errorf("%s: geo.dns.listen: %w", cfg.Pos("geo", "dns", "listen"), err)
	}
	ln, err := net.Listen("tcp", d.Listen)
	if err != nil {
		pc.Close()
		return fmt.Errorf("%s: geo.dns.listen: %w", cfg.Pos("geo", "dns", "listen"), err)
	}
	f.dnsAddr = pc.LocalAddr().String()
	f.done.Go(func() {
		if err := geodns.Serve(ctx, pc, ln, h); err != nil && ctx.Err() == nil {
			f.log.Error("GeoDNS stopped", "err", err)
		}
	})
	return nil
}

// resolvedClient is the client ServeHTTP resolved as r arrived, for the
// router's steering and nodes API.
func resolvedClient(r *http.Request) geo.Client {
	if x := exchange.From(r.Context()); x != nil {
		return x.Client
	}
	return geo.Client{}
}

// steer puts the route's geo steering in front of h. With steer off it
// still samples the client's round trip.
func (f *fleet) steer(mode string, h http.Handler) http.Handler {
	if f.router == nil {
		return h
	}
	m, _ := geo.ParseSteerMode(mode)
	here := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if x := exchange.From(r.Context()); x != nil {
			x.Steered = false
		}
		h.ServeHTTP(w, r)
	})
	steer := f.router.Steer(m, here)
	// Steered until the router hands the request to the route: the load
	// policies scale on is what the service itself served.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if x := exchange.From(r.Context()); x != nil {
			x.Steered = true
		}
		steer.ServeHTTP(w, r)
	})
}

// shareLoad is fed each one-second sample: it keeps this node's load in the
// static fleet, and gossips what this node learned of its clients' RTTs.
func (f *fleet) shareLoad(s telemetry.NodeSample) {
	if f.static != nil {
		f.static.Update(s.Node, func(g *geo.Node) { g.InFlight = s.InFlight })
	}
	if f.cluster != nil && f.learner != nil {
		if err := f.cluster.SetExtra(rttKey, f.learner.Summary()); err != nil {
			f.log.Warn("gossiping client RTTs", "err", err)
		}
	}
}

// staticNodes is the configured fleet, with this node always in it.
func staticNodes(cfg *config.Config) []geo.Node {
	self := config.GeoNode{ID: cfg.Node.ID, Region: cfg.Node.Region, Location: cfg.Node.Location, PublicURL: cfg.Node.PublicURL, Capacity: cfg.Node.Capacity}
	list := cfg.Geo.Nodes
	found := false
	for _, gn := range list {
		found = found || gn.ID == self.ID
	}
	if !found {
		list = append([]config.GeoNode{self}, list...)
	}
	out := make([]geo.Node, 0, len(list))
	for _, gn := range list {
		node := geo.Node{ID: gn.ID, Region: gn.Region, Lat: gn.Location.Lat, Lon: gn.Location.Lon, PublicURL: gn.PublicURL, Capacity: gn.Capacity, Alive: true}
		node.Addrs = parseAddrs(gn.Addrs, gn.PublicURL)
		out = append(out, node)
	}
	return out
}

// staticAddrs are the GeoDNS addresses configured per node id.
func staticAddrs(g *config.Geo) map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for _, gn := range g.Nodes {
		out[gn.ID] = parseAddrs(gn.Addrs, gn.PublicURL)
	}
	return out
}

// parseAddrs reads configured addresses, or the public URL's host when it
// is an IP address.
func parseAddrs(list []string, publicURL string) []netip.Addr {
	var out []netip.Addr
	for _, a := range list {
		if ip, err := netip.ParseAddr(a); err == nil {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		if u, err := url.Parse(publicURL); err == nil {
			if ip, err := netip.ParseAddr(u.Hostname()); err == nil {
				out = append(out, ip)
			}
		}
	}
	return out
}

// meshFleet shows the mesh's members to the geo router. Building the list
// is cheap but not free, so a decision reuses it for a quarter second; the
// same refresh feeds peers' client-RTT summaries to the learner.
type meshFleet struct {
	cluster *mesh.Cluster
	learner *rtt.Learner
	addrs   map[string][]netip.Addr

	mu      sync.Mutex
	cached  atomic.Pointer[fleetView]
	summary map[string][]byte // last summary merged per peer
}

var _ geo.Fleet = (*meshFleet)(nil)

type fleetView struct {
	at    time.Time
	self  geo.Node
	nodes []geo.Node
}

const fleetRefresh = 250 * time.Millisecond

func (f *meshFleet) view() *fleetView {
	if v := f.cached.Load(); v != nil && time.Since(v.at) < fleetRefresh {
		return v
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if v := f.cached.Load(); v != nil && time.Since(v.at) < fleetRefresh {
		return v
	}
	if f.summary == nil {
		f.summary = map[string][]byte{}
	}
	v := &fleetView{at: time.Now()}
	members := f.cluster.Members()
	ids := make([]string, 0, len(members))
	known := make(map[string]bool, len(members))
	for _, m := range members {
		ids = append(ids, m.Meta.ID)
		known[m.Meta.ID] = true
	}
	// Forget what the mesh has forgotten: departed nodes' RTT summaries.
	f.learner.Retain(ids)
	for id := range f.summary {
		if !known[id] {
			delete(f.summary, id)
		}
	}
	for _, m := range members {
		node := geo.Node{
			ID: m.Meta.ID, Region: m.Meta.Region, Lat: m.Meta.Lat, Lon: m.Meta.Lon, PublicURL: m.Meta.PublicURL,
			Alive: m.State == mesh.StateAlive && !m.Stale, Draining: m.State == mesh.StateLeft,
			InFlight: m.Report.InFlight, Capacity: m.Meta.Capacity, Addrs: f.addrs[m.Meta.ID],
		}
		if len(node.Addrs) == 0 {
			node.Addrs = parseAddrs(nil, m.Meta.PublicURL)
		}
		if d, ok := f.cluster.RTT(m.Meta.ID); ok && !m.Self {
			node.RTTFromSelf = d
		}
		if m.Self {
			v.self = node
		} else if s := m.Extra[rttKey]; !bytes.Equal(s, f.summary[m.Meta.ID]) {
			if err := f.learner.Merge(m.Meta.ID, s); err == nil {
				f.summary[m.Meta.ID] = s
			}
		}
		v.nodes = append(v.nodes, node)
	}
	f.cached.Store(v)
	return v
}

func (f *meshFleet) Self() geo.Node    { return f.view().self }
func (f *meshFleet) Nodes() []geo.Node { return f.view().nodes }

// rttKey names the learner's summary in the mesh's per-node payload.
const rttKey = "rtt"

// CountryHeader carries the client's ISO country to transforms (the deny-list
// example reads it). The node always sets or removes it, so a client cannot
// claim a country.
const CountryHeader = "X-Perigee-Country"

// UnknownCountry tags a client the node cannot vouch for (geo.Client.Known):
// behind a trusted proxy whose headers disagree or do not parse, the only
// address left is a proxy's, whose country is not the client's.
const UnknownCountry = "XX"

type countryTagger struct{ db *geoip.DB }

func (c *countryTagger) tag(r *http.Request, client geo.Client) {
	r.Header.Del(CountryHeader)
	if !client.Known {
		r.Header.Set(CountryHeader, UnknownCountry)
	} else if loc := c.db.Lookup(client.Addr); loc.Country != "" {
		r.Header.Set(CountryHeader, loc.Country)
	}
}
