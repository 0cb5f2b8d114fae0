package aggregator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"

	"perigee/aggregator/store"
	"perigee/binread"
	"perigee/files"
	"perigee/telemetry/wire"
)

// dedupWindow is how many sequence numbers below a node's highest stored
// one are remembered exactly.
//
// Why a window is enough: a shipper sends its spool oldest first, one batch
// at a time, and sends batch k+1 only once k is acknowledged (or dropped for
// good). So the only batch of a node that can arrive twice is its highest:
// a resend whose answer was lost. A sequence far below the highest was
// never sent before (a node whose spool was wiped and whose clock stepped
// back), and is stored as new.
const dedupWindow = 4096

// seqWindow is one node's dedup state: the highest sequence stored and a
// bitmap of which of the dedupWindow below it were.
type seqWindow struct {
	high    uint64
	bits    [dedupWindow / 64]uint64 // bit i: high-i is stored
	batches uint64                   // stored, ever
	records uint64
	pending map[uint64]store.Pos // being stored now → store end before its append
}

func (w *seqWindow) has(seq uint64) bool {
	if w.batches == 0 || seq > w.high || w.high-seq >= dedupWindow {
		return false
	}
	i := w.high - seq
	return w.bits[i/64]&(1<<(i%64)) != 0
}

func (w *seqWindow) add(seq uint64) {
	if w.batches == 0 {
		w.high = seq
	} else if seq > w.high {
		w.shift(seq - w.high)
		w.high = seq
	}
	if i := w.high - seq; i < dedupWindow {
		w.bits[i/64] |= 1 << (i % 64)
	}
}

// shift moves the bitmap by n places towards older sequences.
func (w *seqWindow) shift(n uint64) {
	if n >= dedupWindow {
		w.bits = [dedupWindow / 64]uint64{}
		return
	}
	words, rest := int(n/64), n%64
	for i := len(w.bits) - 1; i >= 0; i-- {
		var v uint64
		if j := i - words; j >= 0 {
			v = w.bits[j] << rest
			if rest > 0 && j > 0 {
				v |= w.bits[j-1] >> (64 - rest)
			}
		}
		w.bits[i] = v
	}
}

// dedup knows which batches are stored, in memory that grows with the
// number of nodes only, and checkpoints itself to a file so a restart reads
// only the records appended since.
type dedup struct {
	mu    sync.Mutex
	nodes map[string]*seqWindow
}

func newDedup() *dedup { return &dedup{nodes: map[string]*seqWindow{}} }

func (d *dedup) node(name string) *seqWindow {
	w := d.nodes[name]
	if w == nil {
		w = &seqWindow{pending: map[uint64]store.Pos{}}
		d.nodes[name] = w
	}
	return w
}

// reservation is the outcome of claiming a batch id.
type reservation int

const (
	claimed   reservation = iota // new: the caller stores it
	duplicate                    // already stored
	inFlight                     // another request is storing it now
)

// reserve claims (node, seq) for a caller about to append it at or after
// end.
func (d *dedup) reserve(node string, seq uint64, end store.Pos) reservation {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.node(node)
	switch _, busy := w.pending[seq]; {
	case w.has(seq):
		return duplicate
	case busy:
		return inFlight
	}
	w.pending[seq] = end
	return claimed
}

func (d *dedup) release(node string, seq uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.node(node).pending, seq)
}

// commit records a stored batch; it reports false if it was known already
// (a record replayed from the store that the checkpoint covered).
func (d *dedup) commit(node string, seq uint64, records int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.node(node)
	delete(w.pending, seq)
	if w.has(seq) {
		return false
	}
	w.add(seq)
	w.batches++
	w.records += uint64(records)
	return true
}

// counts is a node's stored batches and records; ok is false for a node
// that never had one stored.
func (d *dedup) counts(node string) (batches, records uint64, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.nodes[node]
	if w == nil || w.batches == 0 {
		return 0, 0, false
	}
	return w.batches, w.records, true
}

func (d *dedup) totals() (batches, records uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.nodes {
		batches += w.batches
		records += w.records
	}
	return batches, records
}

// Checkpoint layout, varints unless noted: magic "PGDD" | version 1 |
// segment | offset | nodes | per node: name, high, batches, records, the
// bitmap as dedupWindow/64 little-endian u64.
const (
	checkpointMagic = "PGDD\x01"
	checkpointFile  = "dedup.state"
	// maxNodes bounds the nodes a checkpoint holds, and with them its size
	// (maxCheckpointBytes, 44 MiB), which is all of it that load reads. A
	// fleet has a token per node, far fewer; a state of more nodes (the
	// development token's any names) is saved, refused at load, and the
	// whole store read instead.
	maxNodes           = 1 << 16
	maxCheckpointEntry = binary.MaxVarintLen64 + wire.MaxNodeName + 3*binary.MaxVarintLen64 + dedupWindow/8
	maxCheckpointBytes = len(checkpointMagic) + 3*binary.MaxVarintLen64 + maxNodes*maxCheckpointEntry
)

var errCheckpoint = errors.New("aggregator: malformed dedup checkpoint")

// save writes the state atomically with the store position it covers:
// every record before pos is in the state. end is the store's end now; a
// batch being appended lowers pos to the end before its append.
func (d *dedup) save(dir string, end store.Pos) error {
	d.mu.Lock()
	pos := end
	body := binary.AppendUvarint(nil, uint64(len(d.nodes)))
	for name, w := range d.nodes {
		for _, p := range w.pending {
			if p.Seg < pos.Seg || (p.Seg == pos.Seg && p.Off < pos.Off) {
				pos = p
			}
		}
		body = binary.AppendUvarint(body, uint64(len(name)))
		body = append(body, name...)
		for _, v := range []uint64{w.high, w.batches, w.records} {
			body = binary.AppendUvarint(body, v)
		}
		for _, word := range w.bits {
			body = binary.LittleEndian.AppendUint64(body, word)
		}
	}
	d.mu.Unlock()
	b := binary.AppendUvarint([]byte(checkpointMagic), pos.Seg)
	b = binary.AppendUvarint(b, uint64(pos.Off))
	b = append(b, body...)
	if _, err := files.WriteAtomic(filepath.Join(dir, checkpointFile), b); err != nil {
		return fmt.Errorf("dedup checkpoint: %w", err)
	}
	return nil
}

// load reads a checkpoint and returns the position it covers. No file is
// the zero position: everything in the store is read.
func (d *dedup) load(dir string) (store.Pos, error) {
	b, err := files.Read(filepath.Join(dir, checkpointFile), int64(maxCheckpointBytes))
	if errors.Is(err, os.ErrNotExist) {
		return store.Pos{}, nil
	}
	if err != nil {
		return store.Pos{}, fmt.Errorf("dedup checkpoint: %w", err)
	}
	r := binread.New(b, errCheckpoint)
	if string(r.Take(len(checkpointMagic), "magic")) != checkpointMagic {
		return store.Pos{}, fmt.Errorf("%w: bad magic", errCheckpoint)
	}
	seg, off := r.Uvarint("segment"), r.Uvarint("offset")
	if off > math.MaxInt64 {
		return store.Pos{}, fmt.Errorf("%w: offset %d", errCheckpoint, off)
	}
	pos := store.Pos{Seg: seg, Off: int64(off)}
	const minNode = 1 + 1 + 3 + dedupWindow/8
	n := r.Count(minNode, maxNodes, "nodes")
	d.mu.Lock()
	defer d.mu.Unlock()
	for range n {
		name := string(r.Bytes(wire.MaxNodeName, "node"))
		w := d.node(name)
		w.high, w.batches, w.records = r.Uvarint("high"), r.Uvarint("batches"), r.Uvarint("records")
		for i := range w.bits {
			word := r.Take(8, "bitmap")
			if word == nil {
				break
			}
			w.bits[i] = binary.LittleEndian.Uint64(word)
		}
	}
	r.End()
	if err := r.Err(); err != nil {
		d.nodes = map[string]*seqWindow{}
		return store.Pos{}, err
	}
	return pos, nil
}
