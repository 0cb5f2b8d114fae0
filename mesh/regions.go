package mesh

import (
	"maps"
	"slices"
	"time"

	"perigee/telemetry"
)

// RegionView is the merged figures of a region's live nodes with fresh
// reports, for GET /regions and the policies' snapshot. Of another region
// than ours they come from its summary, which carries no services.
type RegionView struct {
	Name     string                             `json:"name"`
	Leader   string                             `json:"leader"`  // "" while no eligible member claims a term
	Term     uint64                             `json:"term"`    // the leader's term
	Members  []string                           `json:"members"` // live ids, sorted
	Fresh    int                                `json:"fresh"`   // members whose report is merged
	Stale    int                                `json:"stale"`   // live members left out for a stale report
	Capacity int                                `json:"capacity"`
	RPS      float64                            `json:"rps"`
	InFlight int64                              `json:"in_flight"`
	CPU      float64                            `json:"cpu"`
	Services map[string]telemetry.ServiceSample `json:"services,omitempty"`
	// Summary is set when the figures are another region's summary; its
	// age is SummaryAge.
	Summary    bool          `json:"summary,omitempty"`
	SummaryAge time.Duration `json:"summary_age_ns,omitempty"`
}

// Regions lists the view of every region that has a live member.
func (c *Cluster) Regions() []RegionView {
	c.mu.Lock()
	var names []string
	for name, in := range c.regions {
		for _, p := range in {
			if name != "" && p.state == StateAlive {
				names = append(names, name)
				break
			}
		}
	}
	c.mu.Unlock()
	slices.Sort(names)
	out := make([]RegionView, 0, len(names))
	for _, name := range names {
		out = append(out, c.Region(name))
	}
	return out
}

// Region merges the live members of one region: ours from their reports,
// another from its summary while that is fresh. It costs the region's
// members, not the fleet's.
func (c *Cluster) Region(name string) RegionView {
	now := time.Now()
	v := RegionView{Name: name}
	c.mu.Lock()
	if h := c.summaries[name]; name != c.meta.Region && h != nil && h.age(now) <= c.timing.SummaryStale {
		c.summaryViewLocked(&v, h, now)
		c.mu.Unlock()
		return v
	}
	var samples []telemetry.NodeSample
	for _, id := range slices.Sorted(maps.Keys(c.regions[name])) {
		p := c.regions[name][id]
		if p.state != StateAlive {
			continue
		}
		v.Members = append(v.Members, id)
		m := c.memberLocked(id, p, now)
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
	v.Leader, v.Term = c.shownLeaderLocked(name, now)
	c.mu.Unlock()
	v.Services = telemetry.MergeServices(samples)
	return v
}

// summaryViewLocked fills v from a region's summary, with its members as
// memberlist shows them alive.
func (c *Cluster) summaryViewLocked(v *RegionView, h *heldSummary, now time.Time) {
	for _, id := range slices.Sorted(maps.Keys(c.regions[v.Name])) {
		if c.regions[v.Name][id].state != StateAlive {
			continue
		}
		v.Members = append(v.Members, id)
		if i, ok := h.idx[id]; ok && h.s.Members[i].Fresh {
			v.Fresh++
		} else {
			v.Stale++
		}
	}
	v.Capacity, v.RPS, v.InFlight, v.CPU = h.s.Capacity, h.s.RPS, h.s.InFlight, h.s.CPU
	v.Leader, v.Term = h.s.leader()
	v.Summary, v.SummaryAge = true, h.age(now)
}
