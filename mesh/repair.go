package mesh

import (
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// A node that gets a beat whose base report (or summary) it does not hold
// has missed it. It asks that node for it alone (a "want"), and the node
// answers directly with a bundle of its report, to askers of its region,
// and its region's summary, if it sends one: a few hundred bytes, where a
// push/pull carries every member and more.

// direct is one message to one node, for sendLoop.
type direct struct {
	to       *memberlist.Node
	msg      []byte
	reliable bool // over TCP, else one UDP packet
}

// outboxSize and streamsSize bound the direct messages waiting; more are
// dropped, and the next report, beat, lease round or push/pull makes up
// for them.
const (
	outboxSize  = 1024
	streamsSize = 16
)

// askRepairLocked queues a want of id, at most once per refresh interval
// per peer.
func (c *Cluster) askRepairLocked(id string, p *peer, now time.Time) {
	if now.Sub(p.repairAt) < c.timing.Refresh {
		return
	}
	n, ok := nodeAt(id, p.addr)
	if !ok {
		return
	}
	p.repairAt = now
	c.send(direct{to: n, msg: encodeWant(c.meta.ID), reliable: true})
}

// answerWant sends the member that asked our report (if it is of our
// region) and our region's summary (if we send it), at most twice per
// refresh interval per member, and only to a member memberlist shows
// alive: a want names its sender, and we answer that member's address,
// never one the message gives.
func (c *Cluster) answerWant(from string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[from]
	if from == c.meta.ID || p == nil || p.state != StateAlive || c.lastSent == nil || now.Sub(p.answerAt) < c.timing.Refresh/2 {
		return
	}
	n, ok := nodeAt(from, p.addr)
	if !ok {
		return
	}
	var items [][]byte
	if p.meta.Region == c.meta.Region {
		msg, err := encodeMessage(kindReport, []*report{c.lastSent})
		if err != nil {
			c.log.Error("cannot encode our report for a repair", "err", err)
			return
		}
		items = append(items, msg)
	}
	if c.summarising && c.mySum != nil {
		s := *c.mySum
		s.Seq, s.Age = c.sumSeq, now.Sub(c.sumBeatAt)
		items = append(items, encodeSummary(&s))
		c.regossipLocked(&s, p, now)
	}
	if len(items) == 0 {
		return
	}
	// A bundle's items are merged without relaying.
	p.answerAt = now
	c.send(direct{to: n, msg: encodeBundle(items), reliable: true})
}

// summaryWantsToRegossip is how many wants of our summary from other
// regions make us gossip it again in full.
const summaryWantsToRegossip = 3

// regossipLocked counts a want of our summary s from p, and when several
// nodes of other regions ask (a summary, or a change of summariser, that
// many missed), gossips s again in full, at most once per summary
// refresh: one broadcast reaches them all, where a TCP answer each
// overflows the stream queue and the rest wait for beat after beat (in a
// real 100-node run, 66 nodes took 20 s so).
func (c *Cluster) regossipLocked(s *summary, p *peer, now time.Time) {
	if p.meta.Region == c.meta.Region {
		return
	}
	if c.sumWants++; c.sumWants >= summaryWantsToRegossip && now.Sub(c.regossipAt) >= c.timing.SummaryRefresh {
		c.sumWants, c.regossipAt = 0, now
		c.queue.QueueBroadcast(newSummaryBroadcast(s, false, now))
	}
}

// send queues d. TCP has a queue of its own, so that a slow connection
// holds up no report.
func (c *Cluster) send(d direct) {
	q := c.outbox
	if d.reliable {
		q = c.streams
	}
	select {
	case q <- d:
	default:
		c.unsent.Add(1)
	}
}

// sendLoop sends what the outbox holds, one UDP packet at a time.
func (c *Cluster) sendLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case d := <-c.outbox:
			if err := c.ml.SendBestEffort(d.to, d.msg); err != nil {
				c.log.Debug("direct message not delivered", "peer", d.to.Name, "err", err)
			}
		}
	}
}

// maxStreamsOut bounds the TCP sends in flight at once.
const maxStreamsOut = 4

// streamLoop sends what the streams queue holds, up to maxStreamsOut at
// once and one per peer: a peer whose dials go unanswered (a firewall
// dropping them, a host gone and not yet declared dead) holds a send for
// memberlist's TCPTimeout, and one at a time every send behind it waited
// as long. A message to a peer that has one in flight is dropped, as at
// a full queue; the next want or push/pull makes up for it.
func (c *Cluster) streamLoop() {
	defer c.wg.Done()
	slots := make(chan struct{}, maxStreamsOut)
	var mu sync.Mutex
	busy := map[string]bool{}
	for {
		var d direct
		select {
		case <-c.stop:
			return
		case d = <-c.streams:
		}
		mu.Lock()
		held := busy[d.to.Name]
		busy[d.to.Name] = true
		mu.Unlock()
		if held {
			c.unsent.Add(1)
			continue
		}
		select {
		case <-c.stop:
			return
		case slots <- struct{}{}:
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := c.ml.SendReliable(d.to, d.msg); err != nil {
				c.log.Debug("direct message not delivered", "peer", d.to.Name, "err", err)
			}
			mu.Lock()
			delete(busy, d.to.Name)
			mu.Unlock()
			<-slots
		}()
	}
}
