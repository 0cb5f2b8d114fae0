package mesh

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// A node that gets a beat whose base report it does not hold has missed a
// report. It asks that node for its report alone (a "want"), and the node
// answers with it directly: a few hundred bytes, where a push/pull carries
// every report and member, ~100 KB at 500 nodes.

// repair is one direct message for repairLoop: a want, or an answer.
type repair struct {
	to  *memberlist.Node
	msg []byte
}

// repairQueue bounds the direct messages waiting; more are dropped, and
// the next beat or push/pull makes up for them.
const repairQueue = 16

// askRepairLocked queues a want for id's report, at most once per refresh
// interval per peer.
func (c *Cluster) askRepairLocked(id string, p *peer, now time.Time) {
	if now.Sub(p.repairAt) < c.timing.Refresh {
		return
	}
	n, ok := nodeAt(id, p.addr)
	if !ok {
		return
	}
	p.repairAt = now
	c.queueRepair(repair{n, encodeWant(c.meta.ID)})
}

// answerWant sends our report to the member that asked for it, at most
// twice per refresh interval per member, and only to a member memberlist
// shows alive: a want names its sender, and we answer that member's
// address, never one the message gives.
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
	// Sent as a state of one report, which the asker merges without
	// relaying: the others hold it already.
	msg, err := encodeMessage(kindState, []*report{c.lastSent})
	if err != nil {
		c.log.Error("cannot encode our report for a repair", "err", err)
		return
	}
	p.answerAt = now
	c.queueRepair(repair{n, msg})
}

func (c *Cluster) queueRepair(r repair) {
	select {
	case c.repairs <- r:
	default:
	}
}

// repairLoop sends what askRepairLocked and answerWant queue, over TCP.
func (c *Cluster) repairLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case r := <-c.repairs:
			if err := c.ml.SendReliable(r.to, r.msg); err != nil {
				c.log.Debug("repair message not delivered", "peer", r.to.Name, "err", err)
			}
		}
	}
}
