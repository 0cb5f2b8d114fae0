package mesh

import (
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

// NotifyMsg implements memberlist.Delegate: one gossiped report or beat,
// or a repair's want or answer.
func (d *delegate) NotifyMsg(b []byte) {
	if len(b) > 0 && b[0] == kindWant {
		from, err := decodeWant(b)
		if err != nil {
			d.c.dropped.Add(1)
			d.c.log.Debug("dropped report request", "err", err, "bytes", len(b))
			return
		}
		d.c.answerWant(from, time.Now())
		return
	}
	if len(b) > 0 && b[0] == kindBeat {
		bt, err := decodeBeat(b)
		if err != nil {
			d.c.dropped.Add(1)
			d.c.log.Debug("dropped gossip beat", "err", err, "bytes", len(b))
			return
		}
		d.c.mergeBeat(bt, time.Now())
		return
	}
	reps, err := decodeMessage(b)
	if err != nil {
		d.c.dropped.Add(1)
		d.c.log.Debug("dropped gossip message", "err", err, "bytes", len(b))
		return
	}
	now := time.Now()
	relay := b[0] == kindReport // a state here is a repair's answer
	for _, r := range reps {
		d.c.merge(r, relay, now)
	}
}

// GetBroadcasts implements memberlist.Delegate. Reports go first: a
// missed change is what makes a node wrong, a missed beat costs little.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	out := d.c.queue.GetBroadcasts(overhead, limit)
	for _, b := range out {
		limit -= overhead + len(b)
	}
	return append(out, d.c.beats.GetBroadcasts(overhead, limit)...)
}

// LocalState implements memberlist.Delegate: every report we hold of a live
// node, for push/pull.
func (d *delegate) LocalState(bool) []byte {
	c := d.c
	now := time.Now()
	c.mu.Lock()
	reps := make([]*report, 0, len(c.peers))
	for _, p := range c.peers {
		if p.rep == nil || p.state == StateDead || p.state == StateLeft {
			continue
		}
		aged := *p.rep
		aged.Age = p.rep.Age + now.Sub(p.recv)
		reps = append(reps, &aged)
	}
	c.mu.Unlock()
	b, err := encodeMessage(kindState, reps)
	if err != nil {
		c.log.Error("cannot encode state for push/pull", "err", err)
		return nil
	}
	return b
}

// MergeRemoteState implements memberlist.Delegate.
func (d *delegate) MergeRemoteState(b []byte, _ bool) {
	if len(b) == 0 {
		return // a peer with nothing to tell yet
	}
	reps, err := decodeMessage(b)
	if err != nil {
		d.c.dropped.Add(1)
		d.c.log.Debug("dropped push/pull state", "err", err, "bytes", len(b))
		return
	}
	now := time.Now()
	for _, r := range reps {
		d.c.merge(r, false, now)
	}
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
	if _, err := c.coords.Update(other.Name, coord, rtt); err != nil {
		c.log.Debug("vivaldi update rejected", "peer", other.Name, "err", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.peers[other.Name]; p != nil {
		p.coord, p.coordAt = coord, time.Now()
	}
}
