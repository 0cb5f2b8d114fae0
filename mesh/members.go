package mesh

import (
	"slices"
	"strings"
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

// membership records what memberlist told us about a node. It runs under
// memberlist's node lock, so it must not call back into memberlist.
func (c *Cluster) membership(n *memberlist.Node, kind string) {
	meta, gen, err := decodeMeta(n.Meta)
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
	p, known := c.peers[n.Name]
	switch {
	case !known && len(c.peers)-c.orphans >= maxPeers:
		c.mu.Unlock()
		c.dropped.Add(1)
		return
	case known && p.state == "":
		c.orphans-- // its report outran its join
	}
	p = c.peerLocked(n.Name)
	if kind == EventDead {
		state = StateDead
		if p.rep != nil && p.rep.Leaving || c.summaryOfLocked(n.Name, meta.Region).Leaving {
			state, kind = StateLeft, EventLeft
		}
	}
	if p.state != state {
		p.since = now
	}
	c.setMetaLocked(n.Name, p, meta)
	p.addr, p.state = n.Address(), state
	if gen != p.gen {
		// A new process under this id: what we hold is its former self's.
		p.gen = gen
		if p.rep != nil && gen != 0 && p.rep.Gen != gen {
			p.rep, p.recv = nil, now
		}
	}
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

// reportAge is how old p's report is: its age when it arrived plus the
// time since. Without a report, the time since the node joined.
func (p *peer) reportAge(now time.Time) time.Duration {
	age := max(now.Sub(p.recv), 0)
	if p.rep != nil {
		age += p.rep.Age
	}
	return age
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
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Meta.ID, b.Meta.ID) })
	return out
}

// summaryOfLocked is what the summary we hold of region says of id; the
// zero summaryMember when it does not list it.
func (c *Cluster) summaryOfLocked(id, region string) summaryMember {
	if h := c.summaries[region]; h != nil {
		if i, ok := h.idx[id]; ok {
			return h.s.Members[i]
		}
	}
	return summaryMember{}
}

func (c *Cluster) memberLocked(id string, p *peer, now time.Time) Member {
	m := Member{Meta: p.meta, Addr: p.addr, State: p.state, Self: id == c.meta.ID, Coordinate: p.coord}
	if m.Self {
		m.Coordinate = c.coords.GetCoordinate()
	}
	age := p.reportAge(now)
	if h := c.summaries[p.meta.Region]; p.meta.Region != c.meta.Region && h != nil {
		// Of another region, what its summary says: a report of the member
		// that came with a push/pull would show it now fresher, now older.
		if i, ok := h.idx[id]; ok {
			sm, age := h.s.Members[i], h.age(now)
			m.HasReport, m.ReportAge = true, age
			m.Report = telemetry.NodeSample{Node: id, Region: p.meta.Region, Time: now.Add(-age), InFlight: sm.InFlight}
			m.Stale = !sm.Fresh || age > c.timing.SummaryStale
			if m.State == StateAlive && m.Stale {
				m.State = StateSuspect
			}
			return m
		}
	}
	if p.rep != nil {
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
