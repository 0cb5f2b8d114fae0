package mesh

import "github.com/hashicorp/memberlist"

// newBroadcastQueue is memberlist's TransmitLimitedQueue with a guard
// against a bug of its, open upstream (hashicorp/memberlist#263, #322):
// when the queue empties, for an instant, on an invalidation or a send, it
// restarts its ids at zero while an item it puts back keeps its old one, so
// a later broadcast of the same length can take that id and silently
// replace it in the queue's tree. Region summaries are of one length and
// replace each other by name, which is just that case: in the model a
// summary was lost this way and the fleet waited 23 s for the next one.
// The guard is an item that never fits a packet, so it is never sent and
// the queue never empties.
func newBroadcastQueue(mult int, numNodes func() int) *memberlist.TransmitLimitedQueue {
	q := &memberlist.TransmitLimitedQueue{RetransmitMult: mult, NumNodes: numNodes}
	q.QueueBroadcast(queueGuard{})
	return q
}

// NewBroadcastQueue is newBroadcastQueue, for the model of the protocol
// (bench/mesh/model), which must queue as the node does.
func NewBroadcastQueue(mult int, numNodes func() int) *memberlist.TransmitLimitedQueue {
	return newBroadcastQueue(mult, numNodes)
}

// queueGuard is larger than any packet: memberlist skips what does not fit.
type queueGuard struct{}

var guardMessage = make([]byte, 1<<16)

func (queueGuard) Message() []byte                       { return guardMessage }
func (queueGuard) Invalidates(memberlist.Broadcast) bool { return false }
func (queueGuard) Finished()                             {}
func (queueGuard) Name() string                          { return "\x00guard" }
