package mesh

import (
	"strconv"
	"time"
)

// Leadership of a region. Every node picks its region's leader from the
// gossiped reports, by one rule, so nodes agree once gossip converges:
//
//   - Only eligible members count: alive to memberlist, with a fresh report.
//   - The eligible member that claims the highest term leads (ties go to the
//     lower id), so a leader keeps the lead while it is alive: a node coming
//     back, or joining with a lower id, does not take it over.
//   - When nobody eligible claims a term, the lowest eligible id is picked,
//     and that node takes a term above every term it has seen.
//
// A node leads only while it also sees a majority of its region's recently
// known members, so at most one side of a partition leads, and a node that
// cannot reach its seeds leads nobody. A term is never taken twice by one
// node, and a node that loses the lead (to a higher term, a tie, or for
// want of a majority) must take a new term to lead again.

// Leadership says whether this node leads its region now, and under which
// term. It is true only while the rule above picks this node, its term is
// the highest it knows of, no other member claims that term, it sees a
// majority of the region, and it holds its lease (lease.go), so no other
// node's Leadership is true at the same time. Ask it right before acting,
// and pass the term to the actuator, which can then refuse a write under
// a lower term than one it has seen.
func (c *Cluster) Leadership() (term uint64, ok bool) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leadsLocked(now) || !c.leaseValidLocked(now) {
		return 0, false
	}
	return c.lead, true
}

// IsLeader is Leadership without the term.
func (c *Cluster) IsLeader() bool {
	_, ok := c.Leadership()
	return ok
}

func (c *Cluster) leadsLocked(now time.Time) bool {
	if c.lead == 0 || c.lead != c.term || c.leaving || !c.majorityLocked(now) {
		return false
	}
	id, _ := c.leaderLocked(c.meta.Region, now)
	if id != c.meta.ID {
		return false
	}
	for pid, p := range c.regions[c.meta.Region] {
		if pid != c.meta.ID && p.claim() >= c.lead {
			return false // someone else holds our term, or a later one
		}
	}
	return true
}

// claim is the term p says it leads under, 0 for none.
func (p *peer) claim() uint64 {
	if p.rep == nil || !p.rep.Leads {
		return 0
	}
	return p.rep.Term
}

// eligibleLocked says whether p may lead, or count towards a majority.
func (c *Cluster) eligibleLocked(id string, p *peer, now time.Time) bool {
	if id == c.meta.ID {
		return true
	}
	return p.state == StateAlive && p.rep != nil && p.reportAge(now) <= c.timing.StaleAfter
}

// leaderLocked is the leader of region as this node sees it, and the term
// it claims (0 while it has not taken one).
func (c *Cluster) leaderLocked(region string, now time.Time) (string, uint64) {
	var leader string
	var term uint64
	for id, p := range c.regions[region] {
		if !c.eligibleLocked(id, p, now) {
			continue
		}
		claim := p.claim()
		if id == c.meta.ID {
			claim = c.lead
		}
		if leader == "" || claim > term || claim == term && id < leader {
			leader, term = id, claim
		}
	}
	return leader, term
}

// shownLeaderLocked is the leader of region for views and events: the
// rule's pick once it claims a term, else none. Of another region, the
// one its fresh summary shows.
func (c *Cluster) shownLeaderLocked(region string, now time.Time) (string, uint64) {
	if h := c.summaries[region]; region != c.meta.Region && h != nil && h.age(now) <= c.timing.SummaryStale {
		return h.s.leader()
	}
	id, term := c.leaderLocked(region, now)
	if term == 0 {
		return "", 0
	}
	return id, term
}

// shownLeadersLocked is shownLeaderLocked for every region that has a
// member: at 500 nodes in 50 regions, a pass over each region's members
// or its summary, every sample interval.
func (c *Cluster) shownLeadersLocked(now time.Time) map[string]leaderTerm {
	best := make(map[string]leaderTerm, len(c.regions))
	for region := range c.regions {
		if region != "" {
			var l leaderTerm
			l.id, l.term = c.shownLeaderLocked(region, now)
			best[region] = l
		}
	}
	return best
}

// majorityLocked says whether this node sees more than half of the members
// its region had within the last Remember interval, itself included. A
// member that left on purpose no longer counts; one that failed does until
// Remember has passed. A node with seeds that is alone sees no majority.
func (c *Cluster) majorityLocked(now time.Time) bool {
	if len(c.cfg.Join) > 0 && c.alive.Load() <= 1 {
		return false
	}
	seen, known := c.countLocked(now)
	return 2*seen > known
}

// countLocked is how many members of our region we see (eligible, us
// included), and how many it has had recently (majorityLocked).
func (c *Cluster) countLocked(now time.Time) (seen, known int) {
	for id, p := range c.regions[c.meta.Region] {
		switch {
		case c.eligibleLocked(id, p, now):
			seen++
			known++
		case p.state != StateLeft && now.Sub(c.roster[id]) <= c.timing.Remember:
			known++
		}
	}
	for id, at := range c.roster {
		if _, held := c.peers[id]; !held && now.Sub(at) <= c.timing.Remember {
			known++ // forgotten by the member table, not yet by the majority
		}
	}
	return seen, known
}

// tendLeadership runs every sample interval: it records who of our region
// is seen, steps down when we no longer lead, takes a new term when the
// rule picks us and we see a majority, and reports every region's leader
// changes as events.
func (c *Cluster) tendLeadership(now time.Time) {
	type change struct {
		region, leader, previous string
		term                     uint64
	}
	var changes []change
	c.mu.Lock()
	for id, p := range c.regions[c.meta.Region] {
		switch {
		case c.eligibleLocked(id, p, now):
			c.roster[id] = now
		case p.state == StateLeft:
			delete(c.roster, id)
		}
	}
	for id, at := range c.roster {
		if now.Sub(at) > c.timing.Remember {
			delete(c.roster, id)
		}
	}
	if c.lead != 0 && !c.leadsLocked(now) {
		c.lead, c.dirty = 0, true
		c.restartLeaseLocked()
	}
	if id, _ := c.leaderLocked(c.meta.Region, now); c.lead == 0 && id == c.meta.ID && !c.leaving && c.majorityLocked(now) {
		// Above every term seen, and above the wall clock's seconds, so
		// terms keep rising even across a restart of the whole region.
		c.term = max(c.term+1, c.lease.promisedTerm+1, uint64(max(c.cfg.now().Unix(), 0)))
		c.lead, c.dirty = c.term, true
		c.restartLeaseLocked()
	}
	c.askLeaseLocked(now)
	shown := c.shownLeadersLocked(now)
	for region, l := range shown {
		if prev := c.leaders[region]; prev != l {
			c.leaders[region] = l
			changes = append(changes, change{region, l.id, prev.id, l.term})
		}
	}
	for region := range c.leaders {
		if _, ok := shown[region]; !ok {
			delete(c.leaders, region)
		}
	}
	c.mu.Unlock()
	for _, ch := range changes {
		c.events.push(EventLeader, map[string]string{"region": ch.region, "leader": ch.leader, "previous": ch.previous, "term": strconv.FormatUint(ch.term, 10)})
	}
}

// maxTermAhead is how far past this node's wall clock, in seconds, a term
// from the network may be: a term is taken above the clock's seconds and
// rises by one per change of leader, so a term more than a century ahead
// came from no honest node. Taken in, it would be carried in every
// member's reports and grants, and the next term would wrap to zero.
const maxTermAhead = 1 << 32

// plausibleTerm says whether a term from the network could have been taken.
func (c *Cluster) plausibleTerm(term uint64) bool {
	return term <= uint64(max(c.cfg.now().Unix(), 0))+maxTermAhead
}

// leaderTerm is a region's leader and its term, as last reported in events.
type leaderTerm struct {
	id   string
	term uint64
}
