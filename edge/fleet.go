package edge

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"perigee/edge/config"
	"perigee/geo"
	"perigee/geo/geodns"
	"perigee/geo/geoip"
	"perigee/geo/rtt"
	"perigee/mesh"
	"perigee/policies"
	"perigee/telemetry"
)

// startMesh joins the fleet when the config has a mesh section. The mesh
// gossips the node's one-second samples.
func (n *Node) startMesh(ctx context.Context, cfg *config.Config) error {
	if cfg.Mesh == nil {
		return nil
	}
	meta := mesh.NodeMeta{
		ID: cfg.Node.ID, Region: cfg.Node.Region, Zone: cfg.Node.Zone,
		Lat: cfg.Node.Location.Lat, Lon: cfg.Node.Location.Lon,
		PublicURL: cfg.Node.PublicURL, Capacity: cfg.Node.Capacity, Version: Version,
	}
	c, err := mesh.Start(ctx, *cfg.Mesh, meta, n.sampler.Latest, n.log.With("component", "mesh"))
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Pos("mesh"), err)
	}
	n.cluster = c
	return nil
}

// forwardMeshEvents logs the mesh's events and ships them; it starts once
// the shipper exists and ends with ctx, as the mesh never closes the channel.
func (n *Node) forwardMeshEvents(ctx context.Context) {
	if n.cluster == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-n.cluster.Events():
			n.log.Info("mesh event", "kind", ev.Kind, "fields", ev.Fields)
			if n.shipper != nil {
				n.shipper.AddEvent(ev)
			}
		}
	}
}

// Version is reported to the fleet; cmd/perigee sets it at start.
var Version = "dev"

// isLeader says whether this node runs its region's scale decisions. A node
// without a mesh is a region of one.
func (n *Node) isLeader() bool { return n.cluster == nil || n.cluster.IsLeader() }

// regionFigures are the region's merged figures from gossip; nil without a
// mesh, which the policies read as "this node alone".
func (n *Node) regionFigures() map[string]policies.ServiceFigures {
	if n.cluster == nil {
		return nil
	}
	view := n.cluster.Region(n.state.Load().cfg.Node.Region)
	out := make(map[string]policies.ServiceFigures, len(view.Services))
	for name, s := range view.Services {
		out[name] = policies.FiguresFrom(s, s.Latency.Mean())
	}
	return out
}

// startGeo opens the GeoIP database and builds the router over the mesh's
// members, or over the static node list when there is no mesh.
func (n *Node) startGeo(ctx context.Context, cfg *config.Config) error {
	g := cfg.Geo
	if g == nil {
		return nil
	}
	log := n.log.With("component", "geo")
	db, err := geoip.Open(g.Database, log)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Pos("geo", "database"), err)
	}
	go db.Watch(ctx, 5*time.Second)
	rc, err := g.RouterConfig()
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Pos("geo"), err)
	}
	rc.Log = log
	n.learner = rtt.NewLearner(rtt.Config{Self: cfg.Node.ID, Locate: db.LatLon, SummaryBytes: mesh.MaxExtraValue})
	var fleet geo.Fleet
	if n.cluster != nil {
		fleet = &meshFleet{cluster: n.cluster, learner: n.learner, addrs: staticAddrs(g)}
	} else {
		sf, err := geo.NewStaticFleet(cfg.Node.ID, staticNodes(cfg))
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.Pos("geo", "nodes"), err)
		}
		n.static = sf
		fleet = sf
	}
	n.country = &countryTagger{db: db, trusted: rc.Trusted}
	n.router = geo.NewRouter(rc, db, fleet, n.learner)
	n.nodesAPI = n.router.NodesHandler()
	n.metrics.Registry.MustRegister(n.router.Collector())
	if g.DNS.Listen != "" {
		return n.startGeoDNS(ctx, cfg)
	}
	return nil
}

func (n *Node) startGeoDNS(ctx context.Context, cfg *config.Config) error {
	d := cfg.Geo.DNS
	h, err := geodns.NewHandler(d, n.router, n.log.With("component", "geodns"))
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
	n.addrs.DNS = pc.LocalAddr().String()
	go func() {
		if err := geodns.Serve(ctx, pc, ln, h); err != nil && ctx.Err() == nil {
			n.log.Error("GeoDNS stopped", "err", err)
		}
	}()
	return nil
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
	for _, m := range f.cluster.Members() {
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

// shareLoad is fed each one-second sample: it keeps this node's load in the
// static fleet, and gossips what this node learned of its clients' RTTs.
func (n *Node) shareLoad(s telemetry.NodeSample) {
	if n.static != nil {
		n.static.Update(s.Node, func(g *geo.Node) { g.InFlight = s.InFlight })
	}
	if n.cluster != nil && n.learner != nil {
		if err := n.cluster.SetExtra(rttKey, n.learner.Summary()); err != nil {
			n.log.Warn("gossiping client RTTs", "err", err)
		}
	}
}

// CountryHeader carries the client's ISO country to transforms (the deny-list
// example reads it). The node always sets or removes it, so a client cannot
// claim a country.
const CountryHeader = "X-Perigee-Country"

type countryTagger struct {
	db      *geoip.DB
	trusted []netip.Prefix
}

func (c *countryTagger) tag(r *http.Request) {
	r.Header.Del(CountryHeader)
	if loc := c.db.Lookup(geo.ClientAddr(r, c.trusted)); loc.Country != "" {
		r.Header.Set(CountryHeader, loc.Country)
	}
}
