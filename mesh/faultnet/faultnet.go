// Package faultnet is a memberlist transport for tests and benchmarks that
// runs over real loopback UDP and TCP sockets but injects the faults netem
// would: delay per pair of nodes or regions, packet loss, and one-way or
// two-way partitions. Every endpoint belongs to one Network, which holds the
// rules; the sender applies them, since it knows both ends.
package faultnet

import (
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Any matches every endpoint in a rule.
const Any = "*"

// Link is what happens to traffic from one endpoint to another.
type Link struct {
	Delay   time.Duration // one way
	Loss    float64       // share of packets dropped, 0..1
	Blocked bool          // nothing gets through in this direction
	// Unanswered leaves a dial neither refused nor accepted: it waits out
	// its timeout (or Heal, or the dialler's Shutdown), as a dial to a host
	// whose firewall drops it. Packets still pass.
	Unanswered bool
}

// Network is a set of endpoints and the fault rules between them. Rules are
// keyed by labels: an endpoint answers to its node name, its region and Any.
// When several rules match a pair, the worst of each wins: the longest delay,
// the highest loss, and blocked if any blocks.
type Network struct {
	mu     sync.RWMutex
	rules  map[[2]string]Link
	labels map[string][2]string // address -> {name, region}

	packetBytes atomic.Int64
	streamBytes atomic.Int64
	dropped     atomic.Int64
}

// New returns a network with no faults.
func New() *Network {
	return &Network{rules: map[[2]string]Link{}, labels: map[string][2]string{}}
}

// SetLink sets the rule for traffic from one label to another, one way.
func (n *Network) SetLink(from, to string, l Link) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.rules[[2]string{from, to}] = l
}

// SetDelay sets a symmetric one-way delay between two labels, keeping any
// loss or block already set.
func (n *Network) SetDelay(a, b string, d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, k := range [][2]string{{a, b}, {b, a}} {
		l := n.rules[k]
		l.Delay = d
		n.rules[k] = l
	}
}

// SetLoss drops the given share of packets between every pair of endpoints.
func (n *Network) SetLoss(p float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.rules[[2]string{Any, Any}]
	l.Loss = p
	n.rules[[2]string{Any, Any}] = l
}

// Block cuts traffic from every label in from to every label in to, one way.
func (n *Network) Block(from, to []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, f := range from {
		for _, t := range to {
			l := n.rules[[2]string{f, t}]
			l.Blocked = true
			n.rules[[2]string{f, t}] = l
		}
	}
}

// Partition cuts traffic both ways between two sides.
func (n *Network) Partition(a, b []string) {
	n.Block(a, b)
	n.Block(b, a)
}

// Isolate cuts every packet and stream to and from label, the way a
// SIGSTOPped process looks to the rest of the network. Heal ends it.
func (n *Network) Isolate(label string) {
	n.Partition([]string{label}, []string{Any})
}

// Heal lifts every block and unanswered link, keeping delays and loss.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, l := range n.rules {
		l.Blocked, l.Unanswered = false, false
		n.rules[k] = l
	}
}

// Stats are the bytes the network's transports have sent, and the packets
// the rules dropped.
type Stats struct {
	PacketBytes, StreamBytes, DroppedPackets int64
}

// Stats reads the counters.
func (n *Network) Stats() Stats {
	return Stats{n.packetBytes.Load(), n.streamBytes.Load(), n.dropped.Load()}
}

// link resolves the rules for traffic from src to the endpoint at dst.
func (n *Network) link(src [2]string, dst string) Link {
	n.mu.RLock()
	defer n.mu.RUnlock()
	d, ok := n.labels[dst]
	if !ok {
		d = [2]string{Any, Any}
	}
	var out Link
	for _, f := range []string{src[0], src[1], Any} {
		for _, t := range []string{d[0], d[1], Any} {
			l, ok := n.rules[[2]string{f, t}]
			if !ok {
				continue
			}
			out.Delay = max(out.Delay, l.Delay)
			out.Loss = max(out.Loss, l.Loss)
			out.Blocked = out.Blocked || l.Blocked
			out.Unanswered = out.Unanswered || l.Unanswered
		}
	}
	return out
}

// Transport binds real sockets on addr ("127.0.0.1:0" picks a port) for the
// node name in region, and applies the network's rules to what it sends.
func (n *Network) Transport(name, region, addr string) (*Transport, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("faultnet: bind address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("faultnet: bind port %q: %w", portStr, err)
	}
	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{host},
		BindPort:  port,
		Logger:    log.New(io.Discard, "", 0),
	})
	if err != nil {
		return nil, fmt.Errorf("faultnet: %w", err)
	}
	self := net.JoinHostPort(host, strconv.Itoa(inner.GetAutoBindPort()))
	n.mu.Lock()
	n.labels[self] = [2]string{name, region}
	n.mu.Unlock()
	t := &Transport{net: n, inner: inner, self: [2]string{name, region}, addr: self,
		streams: make(chan net.Conn), done: make(chan struct{}), closed: make(chan struct{})}
	go t.countAccepted()
	return t, nil
}

// countAccepted hands accepted streams to memberlist wrapped in a byte
// counter, so both ends of a push/pull are measured. After Shutdown begins
// it keeps draining, since the inner listener blocks until it is read.
func (t *Transport) countAccepted() {
	for {
		select {
		case c := <-t.inner.StreamCh():
			select {
			case t.streams <- &countingConn{Conn: c, n: &t.net.streamBytes, own: &t.streamBytes}:
			case <-t.done:
				c.Close()
			}
		case <-t.closed:
			return
		}
	}
}

// Transport is one endpoint of a Network. It implements
// memberlist.NodeAwareTransport.
type Transport struct {
	net   *Network
	inner *memberlist.NetTransport
	self  [2]string
	addr  string

	streams     chan net.Conn
	streamBytes atomic.Int64  // both ways, on this endpoint's streams
	done        chan struct{} // shutting down: stop handing streams over
	closed      chan struct{} // sockets closed: stop draining
	shutdown    sync.Once
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// Addr is the address the transport listens on.
func (t *Transport) Addr() string { return t.addr }

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *Transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo implements memberlist.Transport.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends a packet unless the rules drop it, after the rule's
// delay. The packet is copied because memberlist reuses its buffers.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	l := t.net.link(t.self, a.Addr)
	if l.Blocked || (l.Loss > 0 && rand.Float64() < l.Loss) {
		t.net.dropped.Add(1)
		return now, nil // a lost datagram is not an error to the sender
	}
	t.net.packetBytes.Add(int64(len(b)))
	if l.Delay <= 0 {
		_, err := t.inner.WriteToAddress(b, a)
		return now, err
	}
	buf := append([]byte(nil), b...)
	time.AfterFunc(l.Delay, func() {
		// The socket may be closed by then; a late packet is simply lost.
		_, _ = t.inner.WriteToAddress(buf, a)
	})
	return now, nil
}

// PacketCh implements memberlist.Transport.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.inner.PacketCh() }

// DialTimeout implements memberlist.Transport.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// ErrPartitioned is returned when dialling across a block.
var ErrPartitioned = errors.New("faultnet: partitioned")

// DialAddressTimeout opens a stream. A stream needs both directions, so a
// block either way refuses it; the delay is paid once, as the handshake's
// round trip.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	there := t.net.link(t.self, a.Addr)
	t.net.mu.RLock()
	peer, known := t.net.labels[a.Addr]
	t.net.mu.RUnlock()
	back := Link{}
	if known {
		back = t.net.link(peer, t.addr)
	}
	if there.Blocked || back.Blocked {
		return nil, fmt.Errorf("dial %s: %w", a.Addr, ErrPartitioned)
	}
	if there.Unanswered {
		return nil, t.waitUnanswered(a.Addr, timeout)
	}
	rtt := there.Delay + back.Delay
	if rtt >= timeout {
		time.Sleep(timeout)
		return nil, fmt.Errorf("dial %s: round trip %v exceeds timeout %v", a.Addr, rtt, timeout)
	}
	time.Sleep(rtt)
	c, err := t.inner.DialAddressTimeout(a, timeout-rtt)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &t.net.streamBytes, own: &t.streamBytes}, nil
}

// waitUnanswered holds a dial across an unanswered link until its
// timeout, the link's Heal or our Shutdown.
func (t *Transport) waitUnanswered(addr string, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for t.net.link(t.self, addr).Unanswered {
		select {
		case <-deadline.C:
			return fmt.Errorf("dial %s: i/o timeout after %v", addr, timeout)
		case <-t.done:
			return fmt.Errorf("dial %s: transport shut down", addr)
		case <-poll.C:
		}
	}
	return fmt.Errorf("dial %s: unanswered until healed", addr)
}

// StreamBytes counts the bytes this endpoint's streams carried, both ways.
func (t *Transport) StreamBytes() int64 { return t.streamBytes.Load() }

// StreamCh implements memberlist.Transport.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown closes the sockets and forgets the address. It is safe to call
// twice.
func (t *Transport) Shutdown() error {
	var err error
	t.shutdown.Do(func() {
		close(t.done)
		t.net.mu.Lock()
		delete(t.net.labels, t.addr)
		t.net.mu.Unlock()
		err = t.inner.Shutdown()
		close(t.closed)
	})
	return err
}

// countingConn counts a stream's bytes: those this end writes for the
// network (the other end counts its own), and both ways for this endpoint.
type countingConn struct {
	net.Conn
	n, own *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	c.own.Add(int64(n))
	return n, err
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.own.Add(int64(n))
	return n, err
}
