package mesh

import (
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/hashicorp/memberlist"

	"perigee/connlimit"
)

// DefaultStreams bounds the gossip port's TCP streams. Anyone who reaches
// the port may open them, keyed mesh or not: memberlist serves each with a
// goroutine for up to TCPTimeout and, before it can check the key, buffers
// as much of the message as the stream announces and sends (what it may
// hand memberlist is bounded in streambytes.go). A member holds a few
// streams with a peer at once (a push/pull, a reliable send, a TCP probe);
// 16 per address leaves room for that, and for a few nodes on one host.
// 128 in all is memberlist's own bound on push/pulls served at once.
var DefaultStreams = connlimit.Settings{MaxTotal: 128, MaxPerAddress: 16}

// streams is c's stream bounds with the defaults filled in.
func (c Config) streams() connlimit.Settings {
	s := c.Streams
	if s.MaxTotal == 0 {
		s.MaxTotal = DefaultStreams.MaxTotal
	}
	if s.MaxPerAddress == 0 {
		s.MaxPerAddress = min(DefaultStreams.MaxPerAddress, s.MaxTotal)
	}
	return s
}

// listen opens the gossip sockets at ip:port with their streams bounded
// by s. With port 0 it retries, as memberlist does: the kernel's free TCP
// port may be taken for UDP.
func listen(ip string, port int, s connlimit.Settings, mc *memberlist.Config, log *slog.Logger) (*boundedTransport, error) {
	var (
		nt  *memberlist.NetTransport
		err error
	)
	for range 10 {
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{ip}, BindPort: port, Logger: mc.Logger})
		if err == nil || port != 0 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	addr := &net.TCPAddr{IP: net.ParseIP(ip), Port: nt.GetAutoBindPort()}
	t := &boundedTransport{NetTransport: nt, addr: addr, bytes: newStreamBytes(),
		streams: make(chan net.Conn), done: make(chan struct{}), closed: make(chan struct{})}
	ln := connlimit.Listen(&streamListener{t}, connlimit.New("mesh", s, log))
	go t.accept(ln)
	return t, nil
}

// boundedTransport is memberlist's NetTransport with its accepted streams
// passed through a connlimit bound first, and its streams' bytes bounded.
type boundedTransport struct {
	*memberlist.NetTransport
	addr     *net.TCPAddr
	bytes    *streamBytes
	streams  chan net.Conn
	done     chan struct{} // shutting down: stop handing streams over
	closed   chan struct{} // sockets closed: stop draining
	shutdown sync.Once
}

var _ memberlist.NodeAwareTransport = (*boundedTransport)(nil)

// StreamCh implements memberlist.Transport.
func (t *boundedTransport) StreamCh() <-chan net.Conn { return t.streams }

// accept hands memberlist the streams the bound admits. After Shutdown
// begins it keeps draining, since the NetTransport's accept loop blocks
// until its stream is taken.
func (t *boundedTransport) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		select {
		case t.streams <- t.bytes.accepted(c):
		case <-t.done:
			c.Close()
		}
	}
}

// Shutdown implements memberlist.Transport.
func (t *boundedTransport) Shutdown() error {
	var err error
	t.shutdown.Do(func() {
		close(t.done)
		err = t.NetTransport.Shutdown()
		close(t.closed)
	})
	return err
}

// streamListener presents the NetTransport's accepted streams as a
// listener, for connlimit.Listen.
type streamListener struct{ t *boundedTransport }

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.t.NetTransport.StreamCh():
		return c, nil
	case <-l.t.closed:
		return nil, net.ErrClosed
	}
}

// Close does nothing: the transport's Shutdown closes the socket.
func (l *streamListener) Close() error { return nil }

func (l *streamListener) Addr() net.Addr { return l.t.addr }
