package mesh

import (
	"fmt"
	"time"
)

// The leader lease. Terms fence a deposed leader's writes at an actuator
// that remembers terms; the lease keeps them from overlapping in time at
// all, for actuators that cannot compare terms:
//
//   - A leader asks its region to confirm it every Lease/4 (a leaseAsk of
//     its term and a round number, sent to each member directly). A member
//     grants it (a leaseGrant) only if the term is at least the highest it
//     knows and it has granted no other node that term; so once a member
//     has heard of a later term, it grants the old leader nothing more.
//   - The leader holds its lease while members that, with itself, make a
//     majority of the region (as majorityLocked counts it) granted rounds
//     asked within the last Lease, by its own clock, from the ask's send.
//   - A new leader acts only once it has held its lease for Lease + 10%.
//
// Why two leaders never act at once: the old leader's last majority and
// the new one's first share a member F. F granted the old leader's round
// (asked at t) before it learned the new term, and the new leader's after,
// so t comes before the new leader's first majority, and the old leader's
// lease ends at t + Lease, before the new one has waited Lease + 10% from
// its first majority. This holds while clock rates differ by under 4.7%
// (Lease measured by one clock, Lease + 10% by the other: 1.1/(1+r) >
// 1/(1-r)), which any working quartz clock meets, and while the region's
// members agree on who the region's recent members are (a member joining
// or leaving during a takeover can make two majorities disjoint). Time is
// the monotonic clock, so a paused process that resumes finds its lease
// expired, whatever its wall clock says.
//
// The lease is shorter than the time memberlist takes to declare a node
// dead (its shortest suspicion timeout: 4 s on lan for a region of ten,
// 30 s on wan), so a leader that is cut off stops acting before the
// others have even noticed; the wait only ever delays a new leader by
// Lease + 10%.

// leaseState is our lease as a leader, and our promise as a member.
type leaseState struct {
	round   uint64
	asked   map[uint64]time.Time // open rounds: when each was asked, by our clock
	askedAt time.Time            // the latest round's
	granted map[string]time.Time // per member: when the latest round it granted was asked
	since   time.Time            // when a majority first granted our term; zero before

	promisedTo   string // the leader we last granted, or we ourselves
	promisedTerm uint64
}

// leaseWait is how long a new leader holds its lease before it acts.
func (c *Cluster) leaseWait() time.Duration { return c.timing.Lease + c.timing.Lease/10 }

// restartLeaseLocked forgets our lease, as when we take a term or lose the lead.
func (c *Cluster) restartLeaseLocked() {
	l := &c.lease
	l.asked, l.granted, l.since, l.askedAt = map[uint64]time.Time{}, map[string]time.Time{}, time.Time{}, time.Time{}
	if c.lead != 0 {
		l.promisedTo, l.promisedTerm = c.meta.ID, c.lead
	}
}

// askLeaseLocked starts a lease round when one is due.
func (c *Cluster) askLeaseLocked(now time.Time) {
	l := &c.lease
	if c.lead == 0 || now.Sub(l.askedAt) < c.timing.Lease/4 {
		return
	}
	if l.asked == nil {
		c.restartLeaseLocked()
	}
	l.round++
	l.asked[l.round], l.askedAt = now, now
	for r, at := range l.asked {
		if now.Sub(at) > c.timing.Lease {
			delete(l.asked, r)
		}
	}
	c.toRegionLocked(encodeLease(kindLeaseAsk, leaseMsg{From: c.meta.ID, Term: c.lead, Round: l.round}))
	c.updateLeaseLocked(now)
}

// grantLease answers a leader's ask from a live member of our region, if
// we still follow it.
func (c *Cluster) grantLease(m leaseMsg, now time.Time) {
	if !c.plausibleTerm(m.Term) {
		c.drop("lease ask", fmt.Errorf("term %d is implausible", m.Term), nil)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[m.From]
	if m.From == c.meta.ID || p == nil || p.meta.Region != c.meta.Region || p.state != StateAlive {
		return
	}
	l := &c.lease
	if m.Term < c.term || m.Term < l.promisedTerm || m.Term == l.promisedTerm && m.From != l.promisedTo {
		return // it was deposed, or another node holds that term
	}
	n, ok := nodeAt(m.From, p.addr)
	if !ok {
		return
	}
	l.promisedTo, l.promisedTerm = m.From, m.Term
	if m.Term > c.term {
		c.term, c.dirty = m.Term, true // a later term than we knew: we no longer lead
	}
	c.send(direct{to: n, msg: encodeLease(kindLeaseGrant, leaseMsg{From: c.meta.ID, Term: m.Term, Round: m.Round})})
}

// takeGrant records a member's grant of one of our rounds.
func (c *Cluster) takeGrant(m leaseMsg, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := &c.lease
	at, ok := l.asked[m.Round]
	if c.lead == 0 || m.Term != c.lead || !ok || c.regions[c.meta.Region][m.From] == nil {
		return
	}
	if at.After(l.granted[m.From]) {
		l.granted[m.From] = at
	}
	c.updateLeaseLocked(now)
}

// leaseHeldLocked says whether members that granted rounds asked within
// the last Lease make, with us, a majority of our region.
func (c *Cluster) leaseHeldLocked(now time.Time) bool {
	held := 1
	for id, at := range c.lease.granted {
		if id != c.meta.ID && now.Sub(at) < c.timing.Lease && c.regions[c.meta.Region][id] != nil {
			held++
		}
	}
	_, known := c.countLocked(now)
	return 2*held > known
}

func (c *Cluster) updateLeaseLocked(now time.Time) {
	if c.lead != 0 && c.lease.since.IsZero() && c.leaseHeldLocked(now) {
		c.lease.since = now
	}
}

// leaseValidLocked says whether we may act under our term now.
func (c *Cluster) leaseValidLocked(now time.Time) bool {
	return !c.lease.since.IsZero() && now.Sub(c.lease.since) >= c.leaseWait() && c.leaseHeldLocked(now)
}
