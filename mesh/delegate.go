package mesh

import (
	"encoding/binary"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's callbacks. It is a separate type so that
// the callbacks stay out of Cluster's API.
type delegate struct{ c *Cluster }

// NodeMeta implements memberlist.Delegate; Start validated that it fits.
func (d *delegate) NodeMeta(limit int) []byte {
	b, err := d.c.meta.encode(d.c.gen)
	if err != nil || len(b) > limit {
		d.c.log.Error("node metadata does not fit", "limit", limit, "err", err)
		return nil
	}
	return b
}

// NotifyMsg implements memberlist.Delegate: a report, beat, want or lease
// message sent to us, or a gossiped summary (full or compact) or summary
// beat.
func (d *delegate) NotifyMsg(b []byte) { d.c.handle(b, true, time.Now()) }

// handle takes one message. Items of a bundle (relay false) are merged
// but not relayed: push/pull and repairs bring what others hold already.
func (c *Cluster) handle(b []byte, relay bool, now time.Time) {
	if len(b) < 2 {
		c.drop("short message", nil, b)
		return
	}
	if b[1] != formatVersion {
		c.unknown.Add(1)
		c.log.Debug("skipped message of an unknown format version", "kind", b[0], "version", b[1])
		return
	}
	switch kind := b[0]; {
	case kind == kindReport || kind == kindState:
		reps, err := decodeMessage(b)
		if err != nil {
			c.drop("report", err, b)
			return
		}
		for _, r := range reps {
			c.merge(r, now)
		}
	case kind == kindBeat && relay:
		bt, err := decodeBeat(b)
		if err != nil {
			c.drop("beat", err, b)
			return
		}
		c.mergeBeat(bt, now)
	case kind == kindSummary:
		s, err := decodeSummary(b)
		if err != nil {
			c.drop("summary", err, b)
			return
		}
		c.mergeSummary(s, relay, now)
	case kind == kindSumCompact && relay:
		s, list, err := decodeCompactSummary(b)
		if err != nil {
			c.drop("compact summary", err, b)
			return
		}
		c.mergeCompact(s, list, now)
	case kind == kindSumBeat && relay:
		bt, err := decodeSumBeat(b)
		if err != nil {
			c.drop("summary beat", err, b)
			return
		}
		c.mergeSumBeat(bt, now)
	case kind == kindWant && relay:
		from, err := decodeWant(b)
		if err != nil {
			c.drop("want", err, b)
			return
		}
		c.answerWant(from, now)
	case kind == kindLeaseAsk && relay:
		m, err := decodeLease(kindLeaseAsk, b)
		if err != nil {
			c.drop("lease ask", err, b)
			return
		}
		c.grantLease(m, now)
	case kind == kindLeaseGrant && relay:
		m, err := decodeLease(kindLeaseGrant, b)
		if err != nil {
			c.drop("lease grant", err, b)
			return
		}
		c.takeGrant(m, now)
	case kind == kindBundle && relay:
		items, err := decodeBundle(b)
		if err != nil {
			c.drop("bundle", err, b)
			return
		}
		for _, it := range items {
			c.handle(it, false, now)
		}
	case kind >= kindReport && kind <= kindSumCompact:
		c.drop("message out of place", nil, b) // e.g. a want inside a bundle
	default:
		c.unknown.Add(1)
		c.log.Debug("skipped message of an unknown kind", "kind", kind)
	}
}

func (c *Cluster) drop(what string, err error, b []byte) {
	c.dropped.Add(1)
	c.log.Debug("dropped mesh message", "what", what, "err", err, "bytes", len(b))
}

// GetBroadcasts implements memberlist.Delegate. Summaries go first: a
// missed change is what makes a node wrong, a missed beat costs little.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	out := d.c.queue.GetBroadcasts(overhead, limit)
	for _, b := range out {
		limit -= overhead + len(b)
	}
	return append(out, d.c.beats.GetBroadcasts(overhead, limit)...)
}

// LocalState implements memberlist.Delegate, for push/pull: every region's
// summary, and the reports we hold of our region's live members, as many
// as a receiver takes (maxBundleItems) and a stream carries
// (maxLocalStateBytes). A region too large for that sends a random share
// of its reports each time (the map's order); direct sends and repairs
// carry them anyway.
func (d *delegate) LocalState(bool) []byte {
	c := d.c
	now := time.Now()
	c.mu.Lock()
	var items [][]byte
	size := 2 + binary.MaxVarintLen16 // the bundle's kind, version and count
	add := func(b []byte) bool {
		if len(items) == maxBundleItems || size+binary.MaxVarintLen16+len(b) > maxLocalStateBytes {
			return false
		}
		items, size = append(items, b), size+binary.MaxVarintLen16+len(b)
		return true
	}
	for _, h := range c.summaries {
		s := *h.s
		s.Age = h.age(now)
		add(encodeSummary(&s)) // maxSummaries of them always fit
	}
	for _, p := range c.regions[c.meta.Region] {
		if p.rep == nil || p.state == StateDead || p.state == StateLeft {
			continue
		}
		aged := *p.rep
		aged.Age = p.rep.Age + now.Sub(p.recv)
		b, err := encodeMessage(kindReport, []*report{&aged})
		if err != nil {
			continue // it fitted when it came; a bad one stays out
		}
		if !add(b) {
			break
		}
	}
	c.mu.Unlock()
	return encodeBundle(items)
}

// MergeRemoteState implements memberlist.Delegate.
func (d *delegate) MergeRemoteState(b []byte, _ bool) {
	if len(b) == 0 {
		return // a peer with nothing to tell yet
	}
	if b[0] == kindBundle {
		d.c.handle(b, true, time.Now()) // its items are not relayed
		return
	}
	d.c.handle(b, false, time.Now())
}

// NotifyJoin implements memberlist.EventDelegate.
func (d *delegate) NotifyJoin(n *memberlist.Node) { d.c.membership(n, EventJoin) }

// NotifyUpdate implements memberlist.EventDelegate.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.c.membership(n, EventUpdate) }

// NotifyLeave implements memberlist.EventDelegate: the node failed or left.
// Which one, memberlist does not say (the Node it passes always reads
// alive); membership tells them apart by the node's last report.
func (d *delegate) NotifyLeave(n *memberlist.Node) { d.c.membership(n, EventDead) }

// AckPayload implements memberlist.PingDelegate: our coordinate rides on
// every ack, so the prober can update its own.
func (d *delegate) AckPayload() []byte { return encodeCoord(d.c.coords.GetCoordinate()) }

// NotifyPingComplete implements memberlist.PingDelegate.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	c := d.c
	coord, err := decodeCoord(payload)
	if err != nil {
		c.dropped.Add(1)
		c.log.Debug("dropped ping coordinate", "peer", other.Name, "err", err)
		return
	}
	if err := c.updateCoord(other.Name, coord, rtt); err != nil {
		c.log.Debug("vivaldi update rejected", "peer", other.Name, "err", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.peers[other.Name]; p != nil {
		p.coord, p.coordAt = coord, time.Now()
	}
}
