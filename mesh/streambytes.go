package mesh

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/connlimit"
)

// What one gossip stream may hand memberlist. Memberlist buffers a whole
// stream message before it decrypts it, up to 20 MiB, so without these
// anyone who reaches the port could make it hold the stream slots times
// 32 MiB (what a growing buffer takes for 20 MiB). The largest message a
// member sends is a push/pull: every member memberlist knows, then our
// LocalState, LZW-compressed, then encrypted.
const (
	// maxNodeStateBytes is one member in a push/pull, as memberlist's
	// msgpack encodes it: 666 bytes measured with a 64-byte name, an IPv6
	// address and 512 bytes of metadata (memberlist.MetaMaxSize), plus
	// room for wider integers.
	maxNodeStateBytes = 700
	// maxLocalStateBytes bounds what LocalState sends.
	maxLocalStateBytes = 4 << 20
	// maxPushPullBytes is a push/pull of maxPeers members before
	// compression (the type and header are under 64 bytes).
	maxPushPullBytes = 64 + maxPeers*maxNodeStateBytes + maxLocalStateBytes
	// maxStreamBytes is what one stream may carry: LZW never spends more
	// than 12 bits on an input byte, so compression grows a message by at
	// most half; 64 KiB covers the compression and encryption envelopes.
	// About 16 MiB.
	maxStreamBytes = maxPushPullBytes*3/2 + 64<<10
	// freeStreamBytes of every stream are not counted against the budgets
	// below, so a want, a leaving report, a TCP probe or a small region's
	// push/pull always gets through: the slots bound them (128 x 64 KiB).
	freeStreamBytes = 64 << 10
	// streamBudget bounds what the accepted streams hold past their free
	// bytes at once, in all: four of the largest push/pulls. Memberlist
	// push/pulls with one peer a minute or less often, so at one time a
	// node serves about one.
	streamBudget = 4 * maxStreamBytes
	// streamBudgetPerAddress bounds it for one IPv4 address or IPv6 /64:
	// the largest push/pull, so that one host cannot take the whole budget.
	streamBudgetPerAddress = maxStreamBytes
	// readChunk bounds one read, so a reservation is never much more than
	// what arrives.
	readChunk = 32 << 10
)

var (
	errStreamTooLong = fmt.Errorf("mesh: stream passed %d bytes, more than a push/pull of %d members carries", maxStreamBytes, maxPeers)
	errStreamBudget  = fmt.Errorf("mesh: the gossip port's streams hold their budget of %d MiB in flight (%d MiB from one address)", streamBudget>>20, streamBudgetPerAddress>>20)
)

// streamBytes is the budget the accepted streams share.
type streamBytes struct {
	mu    sync.Mutex
	total int64
	per   map[netip.Prefix]int64
	cut   atomic.Uint64 // streams ended for their bytes, accepted or dialled
}

func newStreamBytes() *streamBytes { return &streamBytes{per: map[netip.Prefix]int64{}} }

func (b *streamBytes) reserve(key netip.Prefix, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.total+n > streamBudget || b.per[key]+n > streamBudgetPerAddress {
		return errStreamBudget
	}
	b.total += n
	b.per[key] += n
	return nil
}

func (b *streamBytes) release(key netip.Prefix, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= n
	if b.per[key] -= n; b.per[key] <= 0 {
		delete(b.per, key)
	}
}

// accepted bounds a stream a peer opened: by its length and the budget.
func (b *streamBytes) accepted(c net.Conn) net.Conn {
	return &boundedConn{Conn: c, bytes: b, budget: true, key: connlimit.Key(c.RemoteAddr())}
}

// dialled bounds a stream we opened by its length only: how many we open
// at once is up to us, not the peer.
func (b *streamBytes) dialled(c net.Conn) net.Conn { return &boundedConn{Conn: c, bytes: b} }

// boundedConn fails its reads once its stream passes maxStreamBytes or,
// for an accepted one, the budget; memberlist then ends the stream and
// logs why (through the rate-limited log, logging.go).
type boundedConn struct {
	net.Conn
	bytes  *streamBytes
	budget bool // counted against bytes' budget
	key    netip.Prefix

	mu   sync.Mutex // memberlist reads from one goroutine; Close may come from another
	read int64      // bytes read
	held int64      // reserved of the budget
	err  error      // why reads fail, once they do
	done bool       // closed: held was released
}

func (c *boundedConn) Read(p []byte) (int, error) {
	p, err := c.reserve(p)
	if err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	c.settle(n)
	return n, err
}

// reserve shortens p to what the stream may still read and reserves of
// the budget what reading it all would take.
func (c *boundedConn) reserve(p []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.err != nil:
		return nil, c.err
	case c.done:
		return nil, net.ErrClosed
	case c.read >= maxStreamBytes:
		return nil, c.fail(errStreamTooLong)
	}
	p = p[:min(int64(len(p)), maxStreamBytes-c.read, readChunk)]
	if need := c.read + int64(len(p)) - freeStreamBytes - c.held; c.budget && need > 0 {
		if err := c.bytes.reserve(c.key, need); err != nil {
			return nil, c.fail(err)
		}
		c.held += need
	}
	return p, nil
}

// settle counts n bytes read and gives back what was reserved for more.
func (c *boundedConn) settle(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.read += int64(n)
	if unused := c.held - max(c.read-freeStreamBytes, 0); unused > 0 {
		c.bytes.release(c.key, unused)
		c.held -= unused
	}
}

func (c *boundedConn) fail(err error) error {
	c.err = err
	c.bytes.cut.Add(1)
	return err
}

func (c *boundedConn) Close() error {
	c.mu.Lock()
	if !c.done {
		c.done = true
		if c.held > 0 {
			c.bytes.release(c.key, c.held)
			c.held = 0
		}
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// DialAddressTimeout implements memberlist.NodeAwareTransport: a peer's
// answer to our push/pull is bounded as its push would be.
func (t *boundedTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := t.NetTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return t.bytes.dialled(c), nil
}

// CutStreams counts the gossip streams ended because they carried more
// than a push/pull can, or found the streams' byte budget spent
// (docs/mesh.md). It stays 0 with a Config.Transport.
func (c *Cluster) CutStreams() uint64 {
	if c.streamBytes == nil {
		return 0
	}
	return c.streamBytes.cut.Load()
}
