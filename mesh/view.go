package mesh

import (
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"

	"perigee/telemetry"
)

// State is a member's health as this node sees it.
type State string

// Member states. Memberlist does not expose its own suspicion without a
// data race, so a node alive to memberlist whose report has gone stale is
// shown as suspect: we have not heard its figures for StaleAfter.
const (
	StateAlive   State = "alive"
	StateSuspect State = "suspect"
	StateDead    State = "dead"
	StateLeft    State = "left"
)

// Member is one node of the mesh, for GET /members and the geo router.
type Member struct {
	Meta       NodeMeta               `json:"meta"`
	Addr       string                 `json:"addr"`
	State      State                  `json:"state"`
	Self       bool                   `json:"self,omitempty"`
	Coordinate *coordinate.Coordinate `json:"coordinate,omitempty"`
	HasReport  bool                   `json:"has_report"`
	Report     telemetry.NodeSample   `json:"report"`
	ReportAge  time.Duration          `json:"report_age_ns"`
	Stale      bool                   `json:"stale"`
	Extra      map[string][]byte      `json:"extra,omitempty"`
}

// RegionView is the merged figures of a region's live nodes with fresh
// reports, for GET /regions and the policies' snapshot.
type RegionView struct {
	Name     string                             `json:"name"`
	Leader   string                             `json:"leader"`
	Epoch    uint64                             `json:"epoch"`
	Members  []string                           `json:"members"` // live ids, sorted
	Fresh    int                                `json:"fresh"`   // members whose report is merged
	Stale    int                                `json:"stale"`   // live members left out for a stale report
	Capacity int                                `json:"capacity"`
	RPS      float64                            `json:"rps"`
	InFlight int64                              `json:"in_flight"`
	CPU      float64                            `json:"cpu"`
	Services map[string]telemetry.ServiceSample `json:"services,omitempty"`
}

// membership records what memberlist told us about a node. It runs under
// memberlist's node lock, so it must not call back into memberlist.
func (c *Cluster) membership(n *memberlist.Node, kind string) {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		c.dropped.Add(1)
		c.log.Warn("ignoring member with bad metadata", "member", n.Name, "err", err)
		return
	}
	if meta.ID != n.Name {
		c.dropped.Add(1)
		c.log.Warn("ignoring member whose metadata names another node", "member", n.Name, "meta_id", meta.ID)
		return
	}
	now := time.Now()
	state := StateAlive
	c.mu.Lock()
	if _, known := c.peers[n.Name]; !known && len(c.peers) >= maxPeers {
		c.mu.Unlock()
		c.dropped.Add(1)
		return
	}
	p := c.peerLocked(n.Name)
	if kind == EventDead {
		state = StateDead
		if p.rep != nil && p.rep.Leaving {
			state, kind = StateLeft, EventLeft
		}
	}
	if p.state != state {
		p.since = now
	}
	p.meta, p.addr, p.state = meta, n.Address(), state
	alive := 0
	for _, q := range c.peers {
		if q.state == StateAlive {
			alive++
		}
	}
	c.alive.Store(int32(alive))
	if state == StateAlive && kind == EventJoin && p.rep == nil {
		p.recv = now // a fresh joiner gets StaleAfter to send its first report
	}
	c.mu.Unlock()
	c.events.push(kind, map[string]string{"member": n.Name, "region": meta.Region, "addr": n.Address()})
}

// numNodes is the count of members alive to memberlist, for the relay
// limit. The queue calls it under its own lock, hence the atomic.
func (c *Cluster) numNodes() int { return max(int(c.alive.Load()), 1) }

// Members lists every node we know, ourselves included, sorted by id.
func (c *Cluster) Members() []Member {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Member, 0, len(c.peers))
	for id, p := range c.peers {
		if p.state == "" {
			continue // gossip about a node memberlist has not shown us
		}
		out = append(out, c.memberLocked(id, p, now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Meta.ID < out[j].Meta.ID })
	return out
}

func (c *Cluster) memberLocked(id string, p *peer, now time.Time) Member {
	m := Member{Meta: p.meta, Addr: p.addr, State: p.state, Self: id == c.meta.ID, Coordinate: p.coord}
	if m.Self {
		m.Coordinate = c.coords.GetCoordinate()
	}
	age := max(now.Sub(p.recv), 0)
	if p.rep != nil {
		age += p.rep.Age
		m.HasReport = true
		m.Report = p.rep.Sample
		m.Report.Node, m.Report.Region = id, p.meta.Region
		m.Report.Time = now.Add(-age)
		m.Extra = p.rep.Extra
	}
	m.ReportAge = age
	m.Stale = !m.Self && age > c.timing.StaleAfter
	if m.State == StateAlive && m.Stale {
		m.State = StateSuspect
	}
	return m
}

// Regions lists the view of every region that has a live member.
func (c *Cluster) Regions() []RegionView {
	names := map[string]bool{}
	for _, m := range c.Members() {
		if m.State == StateAlive || m.State == StateSuspect {
			names[m.Meta.Region] = true
		}
	}
	out := make([]RegionView, 0, len(names))
	for _, name := range sortedKeys(names) {
		out = append(out, c.Region(name))
	}
	return out
}

// Region merges the live members of one region.
func (c *Cluster) Region(name string) RegionView {
	v := RegionView{Name: name}
	var samples []telemetry.NodeSample
	for _, m := range c.Members() {
		if m.Meta.Region != name || (m.State != StateAlive && m.State != StateSuspect) {
			continue
		}
		v.Members = append(v.Members, m.Meta.ID)
		if m.State == StateAlive && v.Leader == "" {
			v.Leader = m.Meta.ID // Members is sorted: the lowest eligible id
		}
		if !m.HasReport || m.Stale {
			v.Stale++
			continue
		}
		v.Fresh++
		v.Capacity += m.Meta.Capacity
		v.RPS += m.Report.RPS
		v.InFlight += m.Report.InFlight
		v.CPU += m.Report.CPU
		samples = append(samples, m.Report)
	}
	v.Epoch = c.regionEpoch(name)
	v.Services = telemetry.MergeServices(samples)
	return v
}

// regionEpoch is the highest epoch live members of the region report; for
// our own region it includes what we learnt from members since gone.
func (c *Cluster) regionEpoch(name string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := uint64(0)
	if name == c.meta.Region {
		e = c.epoch
	}
	for _, p := range c.peers {
		if p.meta.Region == name && p.rep != nil && p.state == StateAlive {
			e = max(e, p.rep.Epoch)
		}
	}
	return e
}

// IsLeader says whether this node leads its region now: the lowest id
// among the region's members that are alive with a fresh report.
func (c *Cluster) IsLeader() bool { return c.Region(c.meta.Region).Leader == c.meta.ID }

// watchLeaders bumps our epoch when we take over our region and reports
// every region's leader changes as events.
func (c *Cluster) watchLeaders() {
	for _, v := range c.Regions() {
		c.mu.Lock()
		prev := c.leaders[v.Name]
		changed := prev != v.Leader
		c.leaders[v.Name] = v.Leader
		if changed && v.Name == c.meta.Region && v.Leader == c.meta.ID {
			c.epoch = max(c.epoch, v.Epoch) + 1
			c.dirty = true
		}
		epoch := c.epoch
		c.mu.Unlock()
		if changed {
			c.events.push(EventLeader, map[string]string{"region": v.Name, "leader": v.Leader, "previous": prev, "epoch": strconv.FormatUint(max(epoch, v.Epoch), 10)})
		}
	}
}

// RTT estimates the round trip to a node from Vivaldi coordinates.
func (c *Cluster) RTT(nodeID string) (time.Duration, bool) {
	if nodeID == c.meta.ID {
		return 0, true
	}
	c.mu.Lock()
	p := c.peers[nodeID]
	var other *coordinate.Coordinate
	if p != nil {
		other = p.coord
	}
	c.mu.Unlock()
	if other == nil || len(other.Vec) != coordDims {
		return 0, false
	}
	d := c.coords.GetCoordinate().DistanceTo(other)
	if d < 0 || math.IsNaN(float64(d)) {
		return 0, false
	}
	return d, true
}
