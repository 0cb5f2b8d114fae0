package mesh

import (
	"sync"
	"time"

	"perigee/telemetry"
)

// Event kinds sent on Cluster.Events.
const (
	EventJoin   = "mesh_join"
	EventUpdate = "mesh_update"
	EventDead   = "mesh_dead"
	EventLeft   = "mesh_left"
	EventLeader = "mesh_leader"
)

// eventQueue is a bounded channel that drops its oldest event rather than
// block memberlist's callbacks when nobody reads.
type eventQueue struct {
	mu   sync.Mutex
	ch   chan telemetry.Event
	node string
}

func newEventQueue(node string, size int) *eventQueue {
	return &eventQueue{ch: make(chan telemetry.Event, size), node: node}
}

func (q *eventQueue) push(kind string, fields map[string]string) {
	e := telemetry.Event{Time: time.Now(), Node: q.node, Kind: kind, Fields: fields}
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		select {
		case q.ch <- e:
			return
		default:
		}
		select {
		case <-q.ch:
		default:
		}
	}
}
