package geo

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// StaticFleet is a fixed list of nodes, for a node configured without the
// mesh and for tests; Update changes a node's state. Readers get a shared
// snapshot, so a decision does not copy the fleet.
type StaticFleet struct {
	self  string
	mu    sync.Mutex // serialises Update's copy-on-write
	nodes atomic.Pointer[[]Node]
}

// NewStaticFleet returns a fleet of nodes in which self is this node.
func NewStaticFleet(self string, nodes []Node) (*StaticFleet, error) {
	if !slices.ContainsFunc(nodes, func(n Node) bool { return n.ID == self }) {
		return nil, fmt.Errorf("static fleet: this node %q is not in the node list", self)
	}
	f := &StaticFleet{self: self}
	snapshot := slices.Clone(nodes)
	f.nodes.Store(&snapshot)
	return f, nil
}

// Self returns this node.
func (f *StaticFleet) Self() Node {
	nodes := *f.nodes.Load()
	return nodes[slices.IndexFunc(nodes, func(n Node) bool { return n.ID == f.self })]
}

// Nodes returns every node, this one included. The slice is shared: callers
// must not modify it.
func (f *StaticFleet) Nodes() []Node { return *f.nodes.Load() }

// Update applies change to the node with the given ID, reporting whether
// there is one.
func (f *StaticFleet) Update(id string, change func(*Node)) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := slices.Clone(*f.nodes.Load())
	i := slices.IndexFunc(next, func(n Node) bool { return n.ID == id })
	if i < 0 {
		return false
	}
	change(&next[i])
	f.nodes.Store(&next)
	return true
}
