package wasm

import (
	"context"
	"sync"

	"github.com/tetratelabs/wazero/api"
)

// Bounds on what proxy-wasm filters share on a node. Envoy has none; a
// filter storing per-client keys would otherwise grow the node without end.
const (
	maxSharedBytes = 64 << 20 // keys and values, all filters together
	maxSharedKeys  = 1 << 16
	maxQueues      = 1024
	maxQueueItems  = 1024
	maxQueueBytes  = 4 << 20  // per queue
	maxQueuedBytes = 64 << 20 // items in all queues together
	// filterShare divides each node-wide bound: one filter (by transform
	// name, which a reload keeps) holds at most that fraction of it, so
	// that it cannot starve the others. A filter is charged for the values
	// it last set, the queues it created and the items it enqueued; the
	// guest metrics (metrics.go) are shared out the same way.
	filterShare = 4
	// maxGuestName bounds the names of queues and metrics, which the node
	// keeps for as long as it runs (1024 of each, at 64 KiB a name, kept
	// 200 MiB); longer ones get BAD_ARGUMENT.
	maxGuestName = 1 << 10
)

// shared is the node's shared data and queues for proxy-wasm filters. The
// data is one namespace for all; queues are named within their filter's
// vm_id, as in Envoy, so that a filter resolves another's by vm_id and name.
type shared struct {
	mu       sync.Mutex
	data     map[string]sharedValue
	bytes    int
	cas      uint32
	queues   map[string]uint32 // by vm_id NUL name
	byID     map[uint32]*queue
	queued   int                 // bytes of the items in all queues
	accounts map[string]*account // by transform name
}

// account is what one filter holds of the node's shared bounds.
type account struct{ bytes, keys, queues, queued int }

type sharedValue struct {
	value []byte
	cas   uint32
	owner string // the filter charged for it
}

type queue struct {
	items []queuedItem
	bytes int
	owner *Transform // whose proxy_on_queue_ready hears of new items
}

type queuedItem struct {
	value []byte
	from  string // the filter charged for it
}

func newShared() *shared {
	return &shared{data: map[string]sharedValue{}, queues: map[string]uint32{}, byID: map[uint32]*queue{},
		accounts: map[string]*account{}}
}

// account is filter's, made on first use. Call with s.mu held.
func (s *shared) account(filter string) *account {
	a := s.accounts[filter]
	if a == nil {
		a = &account{}
		s.accounts[filter] = a
	}
	return a
}

func (p proxyABI) getSharedData(ctx context.Context, mod api.Module, stack []uint64) {
	key, ok := readString(mod, stack[0], stack[1])
	if !ok || p.t == nil {
		stack[0] = statusInvalidMemory
		return
	}
	s := p.t.host.shared
	s.mu.Lock()
	v, found := s.data[key]
	s.mu.Unlock()
	if !found {
		stack[0] = statusNotFound
		return
	}
	if !mod.Memory().WriteUint32Le(uint32(stack[4]), v.cas) {
		stack[0] = statusInvalidMemory
		return
	}
	stack[0] = give(ctx, mod, v.value, uint32(stack[2]), uint32(stack[3]))
}

// setSharedData stores a value; a non-zero cas must match the stored one,
// as in Envoy. Past the node's bounds, or the filter's share of them, it
// fails with INTERNAL_FAILURE.
func (p proxyABI) setSharedData(_ context.Context, mod api.Module, stack []uint64) {
	key, ok1 := readString(mod, stack[0], stack[1])
	value, ok2 := mod.Memory().Read(uint32(stack[2]), uint32(stack[3]))
	if !ok1 || !ok2 || p.t == nil {
		stack[0] = statusInvalidMemory
		return
	}
	cas := uint32(stack[4])
	s := p.t.host.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	old, found := s.data[key]
	if found && cas != 0 && cas != old.cas {
		stack[0] = statusCASMismatch
		return
	}
	size, oldSize := len(key)+len(value), 0
	if found {
		oldSize = len(key) + len(old.value)
	}
	filter := p.t.spec.Name
	mine := s.account(filter)
	charge, keys := size, 1 // what the filter takes on
	if found && old.owner == filter {
		charge, keys = size-oldSize, 0
	}
	if s.bytes+size-oldSize > maxSharedBytes || (!found && len(s.data) >= maxSharedKeys) ||
		mine.bytes+charge > maxSharedBytes/filterShare || mine.keys+keys > maxSharedKeys/filterShare {
		stack[0] = statusInternalFailure
		return
	}
	if found && old.owner != filter {
		prev := s.accounts[old.owner]
		prev.bytes -= oldSize
		prev.keys--
	}
	mine.bytes += charge
	mine.keys += keys
	s.cas++
	if s.cas == 0 {
		s.cas = 1
	}
	s.data[key] = sharedValue{value: append([]byte(nil), value...), cas: s.cas, owner: filter}
	s.bytes += size - oldSize
	stack[0] = statusOK
}

func (p proxyABI) registerQueue(_ context.Context, mod api.Module, stack []uint64) {
	if uint32(stack[1]) > maxGuestName {
		stack[0] = statusBadArgument
		return
	}
	name, ok := readString(mod, stack[0], stack[1])
	if !ok || p.t == nil {
		stack[0] = statusInvalidMemory
		return
	}
	s := p.t.host.shared
	s.mu.Lock()
	key := p.t.spec.VMID + "\x00" + name
	id, found := s.queues[key]
	if mine := s.account(p.t.spec.Name); !found && len(s.byID) < maxQueues && mine.queues < maxQueues/filterShare {
		id = uint32(len(s.byID) + 1)
		s.queues[key] = id
		s.byID[id] = &queue{}
		mine.queues++
		found = true
	}
	if found {
		s.byID[id].owner = p.t // Envoy moves delivery to the last to register
	}
	s.mu.Unlock()
	if !found {
		stack[0] = statusInternalFailure
		return
	}
	stack[0] = statusOK
	if !mod.Memory().WriteUint32Le(uint32(stack[2]), id) {
		stack[0] = statusInvalidMemory
	}
}

func (p proxyABI) resolveQueue(_ context.Context, mod api.Module, stack []uint64) {
	vm, ok1 := readString(mod, stack[0], stack[1])
	name, ok2 := readString(mod, stack[2], stack[3])
	if !ok1 || !ok2 || p.t == nil {
		stack[0] = statusInvalidMemory
		return
	}
	s := p.t.host.shared
	s.mu.Lock()
	id, found := s.queues[vm+"\x00"+name]
	s.mu.Unlock()
	if !found {
		stack[0] = statusNotFound
		return
	}
	stack[0] = statusOK
	if !mod.Memory().WriteUint32Le(uint32(stack[4]), id) {
		stack[0] = statusInvalidMemory
	}
}

func (p proxyABI) enqueue(_ context.Context, mod api.Module, stack []uint64) {
	value, ok := mod.Memory().Read(uint32(stack[1]), uint32(stack[2]))
	if !ok || p.t == nil {
		stack[0] = statusInvalidMemory
		return
	}
	id := uint32(stack[0])
	s := p.t.host.shared
	s.mu.Lock()
	q := s.byID[id]
	mine := s.account(p.t.spec.Name)
	switch {
	case q == nil:
		stack[0] = statusNotFound
	case len(q.items) >= maxQueueItems || q.bytes+len(value) > maxQueueBytes ||
		s.queued+len(value) > maxQueuedBytes || mine.queued+len(value) > maxQueuedBytes/filterShare:
		stack[0] = statusInternalFailure
	default:
		q.items = append(q.items, queuedItem{append([]byte(nil), value...), p.t.spec.Name})
		q.bytes += len(value)
		s.queued += len(value)
		mine.queued += len(value)
		stack[0] = statusOK
	}
	var owner *Transform
	if q != nil {
		owner = q.owner
	}
	s.mu.Unlock()
	if stack[0] == statusOK && owner != nil {
		owner.notifyQueue(id)
	}
}

func (p proxyABI) dequeue(ctx context.Context, mod api.Module, stack []uint64) {
	if p.t == nil {
		stack[0] = statusNotFound
		return
	}
	s := p.t.host.shared
	s.mu.Lock()
	q := s.byID[uint32(stack[0])]
	var item []byte
	status := uint64(statusOK)
	switch {
	case q == nil:
		status = statusNotFound
	case len(q.items) == 0:
		status = statusEmpty
	default:
		head := q.items[0]
		item = head.value
		q.items[0] = queuedItem{}
		q.items = q.items[1:]
		q.bytes -= len(item)
		s.queued -= len(item)
		s.accounts[head.from].queued -= len(item)
	}
	s.mu.Unlock()
	if status != statusOK {
		stack[0] = status
		return
	}
	stack[0] = give(ctx, mod, item, uint32(stack[1]), uint32(stack[2]))
}
