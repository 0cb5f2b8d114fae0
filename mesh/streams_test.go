package mesh

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/connlimit"
	"perigee/memtest"
	"perigee/telemetry"
)

// startOnBind starts a keyed member on its own sockets at bind, as a
// deployed node is (no faultnet in between).
func startOnBind(t *testing.T, id, bind, keys string, join []string, conns connlimit.Settings) *Cluster {
	t.Helper()
	cfg := Config{Bind: bind, KeyringFile: keys, Join: join, Timing: fastTiming, Streams: conns,
		Tuning: func(mc *memberlist.Config) {
			fastTuning(mc)
			mc.TCPTimeout = time.Minute // the flood is held for the whole test
		}}
	c, err := Start(t.Context(), cfg, NodeMeta{ID: id, Region: "eu", Capacity: 1}, func() telemetry.NodeSample { return telemetry.NodeSample{} }, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown() })
	return c
}

// One host that can reach the gossip port, without the key, opens many
// streams, each announcing an encrypted message just under memberlist's
// 20 MiB and sending 1 MiB of it: memberlist buffers what arrives before
// it can check the key, for TCPTimeout. The streams one address holds are
// bounded, the rest are reset at once, and a real member from another
// address still joins.
func TestStreamFloodFromOneAddressIsBounded(t *testing.T) {
	keys := writeKeyring(t, base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	const perAddress = 4
	a := startOnBind(t, "a", "127.0.0.1:0", keys, nil, connlimit.Settings{MaxPerAddress: perAddress})

	// The attacker sends from 127.0.0.3; members' streams come from
	// 127.0.0.1, the kernel's source for loopback.
	attacker := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
	const n, each = 64, 1 << 20
	before := memtest.LiveHeap()
	// encryptMsg (10), then a length just under memberlist's 20 MiB bound.
	hdr := []byte{10, 0x01, 0x3f, 0xff, 0xff}
	junk := make([]byte, each)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		held   int
		conns  []net.Conn
		others []error
	)
	for range n {
		c, err := attacker.Dial("tcp", a.Addr())
		if err != nil {
			continue // reset before the dial returned: refused too
		}
		conns = append(conns, c)
		wg.Go(func() {
			// A refused stream fails here or in the read below.
			if _, err := c.Write(append(hdr, junk...)); err != nil {
				return
			}
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err := c.Read(make([]byte, 1))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				held++ // still open: the server waits for the rest
			case err == nil:
				others = append(others, errors.New("the server answered a stream it cannot decrypt yet"))
			}
		})
	}
	wg.Wait()
	grown := int64(memtest.LiveHeap()) - int64(before)
	for _, c := range conns {
		c.Close()
	}
	if len(others) > 0 {
		t.Fatal(others[0])
	}
	t.Logf("%d of %d streams from one address held; heap grew %.1f MiB, %d goroutines", held, n, float64(grown)/(1<<20), runtime.NumGoroutine())
	if held > perAddress {
		t.Errorf("%d streams from one address held, want at most max_per_address %d", held, perAddress)
	}
	// Each held stream buffers up to 2 MiB of its 1 MiB; 16 MiB of slack.
	if limit := int64(perAddress*2*each + 16<<20); grown > limit {
		t.Errorf("heap grew %d MiB under the flood, want under %d MiB", grown>>20, limit>>20)
	}

	// A real member from another address is not starved while the
	// attacker holds all its address's slots.
	flood := make([]net.Conn, 0, perAddress)
	for range perAddress {
		c, err := attacker.Dial("tcp", a.Addr())
		if err != nil {
			continue
		}
		c.Write(hdr)
		flood = append(flood, c)
	}
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	startOnBind(t, "b", "127.0.0.2:0", keys, []string{a.Addr()}, connlimit.Settings{})
	deadline := time.Now().Add(20 * time.Second)
	for a.ml.NumMembers() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("a member did not join while 127.0.0.3 held its streams")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countingHandler counts the records at Warn or above.
type countingHandler struct {
	mu sync.Mutex
	n  int
}

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *countingHandler) Handle(context.Context, slog.Record) error {
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// A stranger without the key sends junk datagrams to the gossip port:
// memberlist logs an error for each it cannot decrypt, so the sender would
// decide how much the node logs. The lines are bounded, whatever it sends.
func TestJunkPacketsDoNotFloodTheLog(t *testing.T) {
	keys := writeKeyring(t, base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	h := &countingHandler{}
	cfg := Config{Bind: "127.0.0.1:0", KeyringFile: keys, Timing: fastTiming, Tuning: fastTuning}
	c, err := Start(t.Context(), cfg, NodeMeta{ID: "a", Region: "eu", Capacity: 1}, func() telemetry.NodeSample { return telemetry.NodeSample{} }, slog.New(h))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	u, err := net.Dial("udp", c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	const n = 2000
	start := time.Now()
	junk := make([]byte, 64)
	for i := range n {
		junk[0] = byte(i) // any type byte, none decrypts
		u.Write(junk)
		if i%100 == 99 {
			time.Sleep(time.Millisecond) // stay within the socket's buffer
		}
	}
	// Wait until memberlist has read them all, or stopped logging.
	last, seen := -1, h.count()
	for seen != last {
		time.Sleep(500 * time.Millisecond)
		last, seen = seen, h.count()
	}
	windows := int(time.Since(start)/logWindow) + 1
	t.Logf("%d junk datagrams, %d warning or error lines", n, seen)
	if limit := logBurst * windows; seen > limit {
		t.Errorf("%d junk datagrams logged %d lines, want at most %d (%d per %v)", n, seen, limit, logBurst, logWindow)
	}
}
