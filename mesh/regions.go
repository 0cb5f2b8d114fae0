package mesh

import (
	"maps"
	"slices"
	"time"

	"perigee/telemetry"
)

// RegionView is the merged figures of a region's live nodes with fresh
// reports, for GET /regions and the policies' snapshot.
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
	for _, name := range slices.Sorted(maps.Keys(names)) {
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
	c.mu.Lock()
	v.Leader, v.Term = c.shownLeaderLocked(name, time.Now())
	c.mu.Unlock()
	v.Services = telemetry.MergeServices(samples)
	return v
}
