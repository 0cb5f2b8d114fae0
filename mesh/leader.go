package mesh

import "strconv"

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
