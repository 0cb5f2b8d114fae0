package faultnet

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func pair(t *testing.T, nw *Network) (a, b *Transport) {
	t.Helper()
	a, err := nw.Transport("a", "eu", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b, err = nw.Transport("b", "us", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown(); b.Shutdown() })
	return a, b
}

// receive waits for one packet, or reports none within wait.
func receive(tr *Transport, wait time.Duration) (*memberlist.Packet, bool) {
	select {
	case p := <-tr.PacketCh():
		return p, true
	case <-time.After(wait):
		return nil, false
	}
}

func TestPacketsFlowOverRealSockets(t *testing.T) {
	nw := New()
	a, b := pair(t, nw)
	if _, err := a.WriteTo([]byte("hello"), b.Addr()); err != nil {
		t.Fatal(err)
	}
	p, ok := receive(b, 10*time.Second)
	if !ok || string(p.Buf) != "hello" {
		t.Fatalf("got %v %q", ok, p)
	}
	if st := nw.Stats(); st.PacketBytes != 5 {
		t.Errorf("packet bytes = %d, want 5", st.PacketBytes)
	}
}

func TestOneWayBlockByRegionAndHeal(t *testing.T) {
	nw := New()
	a, b := pair(t, nw)
	nw.Block([]string{"eu"}, []string{"us"})
	a.WriteTo([]byte("lost"), b.Addr())
	b.WriteTo([]byte("back"), a.Addr())
	if p, ok := receive(a, 10*time.Second); !ok || string(p.Buf) != "back" {
		t.Fatalf("the open direction lost a packet: %v", ok)
	}
	if _, ok := receive(b, 300*time.Millisecond); ok {
		t.Fatal("a packet crossed the block")
	}
	if nw.Stats().DroppedPackets != 1 {
		t.Errorf("dropped = %d, want 1", nw.Stats().DroppedPackets)
	}
	// A stream needs both directions, so either block refuses it.
	if _, err := b.DialTimeout(a.Addr(), time.Second); !errors.Is(err, ErrPartitioned) {
		t.Errorf("dial across a one-way block: %v", err)
	}
	nw.Heal()
	c, err := a.DialTimeout(b.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("stream")); err != nil {
		t.Fatal(err)
	}
	in := <-b.StreamCh()
	buf := make([]byte, 6)
	if _, err := in.Read(buf); err != nil || string(buf) != "stream" {
		t.Errorf("stream read %q, %v", buf, err)
	}
	in.Close()
	if nw.Stats().StreamBytes != 6 {
		t.Errorf("stream bytes = %d, want 6", nw.Stats().StreamBytes)
	}
}

func TestDelayAndLoss(t *testing.T) {
	nw := New()
	a, b := pair(t, nw)
	nw.SetDelay("a", "us", 200*time.Millisecond)
	start := time.Now()
	a.WriteTo([]byte("slow"), b.Addr())
	if _, ok := receive(b, 10*time.Second); !ok {
		t.Fatal("delayed packet never arrived")
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("delayed packet arrived after %v, before its 200ms delay", took)
	}
	nw.SetLoss(1)
	a.WriteTo([]byte("gone"), b.Addr())
	if _, ok := receive(b, 300*time.Millisecond); ok {
		t.Error("a packet survived 100% loss")
	}
}

func TestPartitionRefusesDial(t *testing.T) {
	nw := New()
	a, b := pair(t, nw)
	nw.Partition([]string{"a"}, []string{"b"})
	if _, err := a.DialTimeout(b.Addr(), time.Second); !errors.Is(err, ErrPartitioned) {
		t.Errorf("dial across a partition: %v", err)
	}
	if _, err := New().Transport("x", "eu", "not-an-address"); err == nil {
		t.Error("bad bind address accepted")
	}
}

func TestIsolateCutsBothWays(t *testing.T) {
	nw := New()
	a, b := pair(t, nw)
	nw.Isolate("a")
	a.WriteTo([]byte("out"), b.Addr())
	b.WriteTo([]byte("in"), a.Addr())
	if _, ok := receive(b, 300*time.Millisecond); ok {
		t.Error("an isolated node's packet got out")
	}
	if _, ok := receive(a, 300*time.Millisecond); ok {
		t.Error("a packet reached an isolated node")
	}
	if _, err := b.DialTimeout(a.Addr(), time.Second); !errors.Is(err, ErrPartitioned) {
		t.Errorf("dial to an isolated node: %v", err)
	}
	nw.Heal()
	a.WriteTo([]byte("back"), b.Addr())
	if _, ok := receive(b, 10*time.Second); !ok {
		t.Error("healed node's packet never arrived")
	}
}
