package mesh

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// maxSummaries bounds the summaries held, one per region, so a peer that
// holds the key cannot grow the table without limit with made-up regions
// (evictSummaryLocked keeps them from crowding out real ones).
const maxSummaries = 1024

// heldSummary is the latest summary we hold of a region.
type heldSummary struct {
	s    *summary
	recv time.Time      // by our clock
	idx  map[string]int // member id -> index in s.Members
	list uint32         // memberList of s.Members, which compact summaries name
	// listSince is when we first held this member list; synced, that we
	// pushed/pulled with a sender of it, which named a member we did not
	// know (syncAddr).
	listSince time.Time
	synced    bool
}

func holdSummary(s *summary, now time.Time) *heldSummary {
	h := &heldSummary{s: s, recv: now, idx: make(map[string]int, len(s.Members)), list: memberList(s.Members), listSince: now}
	for i, m := range s.Members {
		h.idx[m.ID] = i
	}
	return h
}

// age is the summary's age when it came plus the time since.
func (h *heldSummary) age(now time.Time) time.Duration { return h.s.Age + max(now.Sub(h.recv), 0) }

// senderLeads says whether the summary's sender says it leads its region.
func (s *summary) senderLeads() bool {
	for _, m := range s.Members {
		if m.ID == s.Sender {
			return m.Leads
		}
	}
	return false
}

// leader is the member the summary shows leading, and its term.
func (s *summary) leader() (string, uint64) {
	for _, m := range s.Members {
		if m.Leads {
			return m.ID, s.Term
		}
	}
	return "", 0
}

// replacedByLocked says whether s should replace the summary h holds: any
// when ours is stale; a later one of the same sender; or, from another
// sender, when the sender of ours is gone, else by leading sender, higher
// term, lower id. Stale goes first: gossip does not say who sent a
// message, so a member holding the key can send a summary in its sender's
// name with the largest sequence, which nothing the sender sends would be
// later than; such a forgery misleads only while it is fresh.
func (c *Cluster) replacedByLocked(h *heldSummary, s *summary, now time.Time) bool {
	o := h.s
	if h.age(now) > c.timing.SummaryStale {
		return true
	}
	if o.Sender == s.Sender && o.Gen == s.Gen {
		return s.Seq > o.Seq
	}
	if p := c.peers[o.Sender]; p == nil || p.state != StateAlive {
		return true
	}
	if a, b := s.senderLeads(), o.senderLeads(); a != b {
		return a
	}
	if s.Term != o.Term {
		return s.Term > o.Term
	}
	return s.Sender < o.Sender
}

// mergeSummary keeps s if it replaces what we hold of its region, and
// relays it when it came by gossip, so it spreads epidemically.
func (c *Cluster) mergeSummary(s *summary, relay bool, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keepSummaryLocked(s, relay, false, now)
}

// mergeCompact takes a compact summary over the member list we hold of
// its region, and relays it compact. Over another list it is not taken
// nor relayed (we cannot tell what it says), and we ask its sender for
// its summary, unless it is of our own region, whose reports we hold.
func (c *Cluster) mergeCompact(s *summary, list uint32, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.summaries[s.Region]
	if h == nil || h.list != list || len(h.s.Members) != len(s.Members) {
		seen := h != nil && h.s.Sender == s.Sender && h.s.Gen == s.Gen && h.s.Seq >= s.Seq
		if p := c.peers[s.Sender]; !seen && s.Region != c.meta.Region && p != nil && p.state == StateAlive {
			c.askRepairLocked(s.Sender, p, now)
		}
		return
	}
	for i := range s.Members {
		s.Members[i].ID = h.s.Members[i].ID
	}
	c.keepSummaryLocked(s, true, true, now)
}

func (c *Cluster) keepSummaryLocked(s *summary, relay, compact bool, now time.Time) {
	if s.Sender == c.meta.ID {
		return
	}
	if !c.plausibleTerm(s.Term) {
		c.drop("summary", fmt.Errorf("term %d is implausible", s.Term), nil)
		return
	}
	h := c.summaries[s.Region]
	if h == nil && len(c.summaries) >= maxSummaries && !c.evictSummaryLocked(s.Region) {
		c.dropped.Add(1)
		return
	}
	if h != nil && !c.replacedByLocked(h, s, now) {
		return
	}
	held := holdSummary(s, now)
	if h != nil && h.list == held.list {
		held.listSince, held.synced = h.listSince, h.synced
	}
	c.summaries[s.Region] = held
	if relay {
		c.queue.QueueBroadcast(newSummaryBroadcast(s, compact, now))
	}
}

// evictSummaryLocked makes room in a full table for the summary of region,
// if memberlist has shown us a member of it, by dropping one of a region
// it has shown none of. Made-up regions would otherwise fill the table,
// and a real region's summary would be refused while they stay fresh.
func (c *Cluster) evictSummaryLocked(region string) bool {
	if len(c.regions[region]) == 0 {
		return false
	}
	for name := range c.summaries {
		if len(c.regions[name]) == 0 {
			delete(c.summaries, name)
			return true
		}
	}
	return false
}

// mergeSumBeat moves the summary we hold of a region to the beat's
// sequence and age, and relays the beat; a beat of a summary we do not
// hold makes us ask its sender for it.
func (c *Cluster) mergeSumBeat(bt sumBeat, now time.Time) {
	if bt.Sender == c.meta.ID {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.summaries[bt.Region]
	if h != nil && h.s.Sender == bt.Sender && h.s.Gen == bt.Gen {
		switch {
		case bt.Seq <= h.s.Seq && h.age(now) <= c.timing.SummaryStale:
			return // already seen
		case bt.Seq > h.s.Seq && h.s.Seq >= bt.Base:
			s := *h.s
			s.Seq, s.Age = bt.Seq, bt.Age
			h.s, h.recv = &s, now
			c.beats.QueueBroadcast(newSumBeatBroadcast(bt, now))
			return
		}
		// Missed, or ours is stale and ahead of the beat (a forgery's).
	}
	// Our own region's summary we only relay: we hold its reports.
	if p := c.peers[bt.Sender]; bt.Region != c.meta.Region && p != nil && p.state == StateAlive {
		c.askRepairLocked(bt.Sender, p, now)
	}
}

// summarise runs every sample interval. The member the leader rule picks
// in our region (its leader, or the lowest eligible id while none claims
// a term) sends the region's summary: at once when it starts summarising,
// on a change at most every SummaryGap, and a beat every SummaryRefresh.
// A summary over the members of the one before goes compact.
func (c *Cluster) summarise(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, _ := c.leaderLocked(c.meta.Region, now)
	if id != c.meta.ID || c.leaving {
		c.summarising = false
		return
	}
	s := c.buildSummaryLocked(now)
	switch last := c.mySum; {
	case !c.summarising || last == nil || summaryMoved(last, s) && now.Sub(c.sumAt) >= c.timing.SummaryGap:
		compact := c.summarising && last != nil && memberList(last.Members) == memberList(s.Members)
		c.sumSeq++
		s.Seq = c.sumSeq
		c.mySum, c.sumAt, c.sumBeatAt, c.summarising, c.sumWants = s, now, now, true, 0
		c.summaries[s.Region] = holdSummary(s, now)
		c.queue.QueueBroadcast(newSummaryBroadcast(s, compact, now))
	case now.Sub(c.sumBeatAt) >= c.timing.SummaryRefresh:
		c.sumSeq++
		c.sumBeatAt = now
		held := *last
		held.Seq = c.sumSeq
		c.summaries[s.Region] = holdSummary(&held, now)
		c.beats.QueueBroadcast(newSumBeatBroadcast(sumBeat{Region: s.Region, Sender: s.Sender, Gen: s.Gen, Seq: c.sumSeq, Base: last.Seq}, now))
	}
}

// buildSummaryLocked is our region as we see it: its live members (as
// many, by id, as fit maxSummaryBytes), their flags and in-flight counts,
// and the merged figures of all the fresh ones.
func (c *Cluster) buildSummaryLocked(now time.Time) *summary {
	s := &summary{Region: c.meta.Region, Sender: c.meta.ID, Gen: c.gen, Term: c.term}
	for id, p := range c.regions[c.meta.Region] {
		if id != c.meta.ID && p.state != StateAlive {
			continue
		}
		m := summaryMember{ID: id, Fresh: c.eligibleLocked(id, p, now), Leads: p.claim() > 0}
		if id == c.meta.ID {
			m.Leads = c.lead != 0
		}
		if p.rep != nil {
			m.Leaving = p.rep.Leaving
			m.InFlight = p.rep.Sample.InFlight
			if m.Fresh {
				s.Capacity = min(s.Capacity+p.meta.Capacity, MaxCapacity)
				// Saturated, as capacity is: past a float32 the sum is +Inf,
				// which every receiver refuses.
				s.RPS = min(s.RPS+p.rep.Sample.RPS, math.MaxFloat32)
				s.InFlight += p.rep.Sample.InFlight
				s.CPU = min(s.CPU+p.rep.Sample.CPU, math.MaxFloat32)
			}
		}
		s.Members = append(s.Members, m)
	}
	slices.SortFunc(s.Members, func(a, b summaryMember) int { return strings.Compare(a.ID, b.ID) })
	size := len(encodeSummary(&summary{Region: s.Region, Sender: s.Sender, Gen: s.Gen, Seq: math.MaxUint64, Term: s.Term, Capacity: s.Capacity, InFlight: s.InFlight})) + 2
	for i, m := range s.Members {
		if size += 1 + len(m.ID) + 1 + uvarintLen(uint64(m.InFlight)<<1); size > maxSummaryBytes || i == maxSummaryRegn {
			s.Members = s.Members[:i]
			break
		}
	}
	return s
}

// summaryMoved says whether a region changed enough since the summary
// last sent to send a new one: its sums by 5% (one member of ten doubling
// its load moves them 10%; a member's jitter is not in them, reports are
// sent on a 10% move), a member's in-flight count as reports' is
// (change.go), or who is in it, fresh, leading or leaving.
func summaryMoved(old, cur *summary) bool {
	const share = 0.05
	if movedBy(old.RPS, cur.RPS, 1, share) || movedBy(float64(old.InFlight), float64(cur.InFlight), 2, share) || movedBy(old.CPU, cur.CPU, 0.05, share) ||
		old.Capacity != cur.Capacity || old.Term != cur.Term || len(old.Members) != len(cur.Members) {
		return true
	}
	for i, o := range old.Members {
		n := cur.Members[i]
		if o.ID != n.ID || o.Fresh != n.Fresh || o.Leads != n.Leads || o.Leaving != n.Leaving || moved(float64(o.InFlight), float64(n.InFlight), 2) {
			return true
		}
	}
	return false
}

// syncAddr is the address of a live sender of a summary that lists a
// member memberlist has not shown us (or, when the sender is the one we
// missed, of a member it lists that we know alive), for a push/pull. An alive
// message can miss a node: each node relays it only so many times, which
// at 50 nodes leaves a few in ten thousand without it, and push/pull may
// be minutes apart. A list must have been held a rejoin interval, so that
// a summary that outran a join's alive message costs nothing, and each
// list costs at most one push/pull, so a summary that names a member long
// gone cannot make us push/pull again and again.
func (c *Cluster) syncAddr(now time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	reachable := func(id string) string {
		if p := c.peers[id]; id != c.meta.ID && p != nil && p.state == StateAlive {
			return p.addr
		}
		return ""
	}
	for _, h := range c.summaries {
		if h.synced || now.Sub(h.listSince) < c.timing.Rejoin {
			continue
		}
		missing, addr := false, reachable(h.s.Sender)
		for _, m := range h.s.Members {
			if q := c.peers[m.ID]; q == nil || q.state == "" {
				missing = true
			} else if addr == "" {
				addr = reachable(m.ID)
			}
		}
		if missing && addr != "" {
			h.synced = true
			return addr
		}
	}
	return ""
}
