package h3serve

import (
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"perigee/connlimit"
	"perigee/h3serve/h3test"
)

// limited serves ok within a connection limit of perAddr per address, with
// a short idle timeout for the test of a client that vanishes.
func limited(t *testing.T, perAddr int) (*connlimit.Limiter, string) {
	t.Helper()
	l := connlimit.New("h3", connlimit.Settings{MaxTotal: 64, MaxPerAddress: perAddr}, nil)
	srv := &http3.Server{Handler: ok, QUICConfig: &quic.Config{MaxIdleTimeout: 500 * time.Millisecond}}
	_, addr := serveWith(t, srv, time.Second, WithConnLimit(l))
	return l, addr
}

func dialFrom(tr *quic.Transport, addr string, alpn string) (*quic.Conn, error) {
	return h3test.Dial(tr, addr, alpn, &quic.Config{KeepAlivePeriod: 100 * time.Millisecond})
}

func mustDial(t *testing.T, tr *quic.Transport, addr string) *quic.Conn {
	t.Helper()
	c, err := dialFrom(tr, addr, http3.NextProtoH3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseWithError(0, "") })
	return c
}

func waitOpen(t *testing.T, l *connlimit.Limiter, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for l.Stats().Open != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", l.Stats().Open, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func getOn(t *testing.T, c *quic.Conn, addr string) {
	t.Helper()
	if got := get(t, (&http3.Transport{}).NewClientConn(c), "https://"+addr+"/"); got != "ok" {
		t.Fatalf("GET: %q", got)
	}
}

// Over its address's bound a new connection is refused with QUIC's
// CONNECTION_REFUSED before any handshake; the connections held, and
// another address's new ones, are served; a closed one frees its slot.
func TestConnLimitRefusesWithConnectionRefused(t *testing.T) {
	l, addr := limited(t, 2)
	one := h3test.Client(t, "127.0.0.1")
	c1, c2 := mustDial(t, one, addr), mustDial(t, one, addr)
	_, err := dialFrom(one, addr, http3.NextProtoH3)
	if !h3test.IsRefused(err) {
		t.Fatalf("a third connection from one address: %v, want CONNECTION_REFUSED", err)
	}
	// A client may send its Initial again before the refusal reaches it:
	// each refused packet counts.
	if st := l.Stats(); st.Open != 2 || st.RefusedPerAddress == 0 {
		t.Fatalf("stats: %+v", st)
	}
	getOn(t, c1, addr)
	getOn(t, c2, addr)
	getOn(t, mustDial(t, h3test.Client(t, "127.0.0.2"), addr), addr)

	c1.CloseWithError(0, "")
	waitOpen(t, l, 2)
	getOn(t, mustDial(t, one, addr), addr)
}

// A slot is freed when a handshake fails, and when a client vanishes
// without a word and its connection idles out.
func TestConnLimitFreesFailedAndIdleConnections(t *testing.T) {
	l, addr := limited(t, 1)
	one := h3test.Client(t, "127.0.0.1")
	if _, err := dialFrom(one, addr, "no-such-protocol"); err == nil || h3test.IsRefused(err) {
		t.Fatalf("a handshake with no common ALPN: %v", err)
	}
	waitOpen(t, l, 0)

	gone := h3test.Client(t, "127.0.0.1")
	mustDial(t, gone, addr)
	if _, err := dialFrom(one, addr, http3.NextProtoH3); !h3test.IsRefused(err) {
		t.Fatalf("over the bound: %v", err)
	}
	gone.Conn.Close() // no CONNECTION_CLOSE goes out: the server only stops hearing from it
	waitOpen(t, l, 0)
	getOn(t, mustDial(t, one, addr), addr)
}

// Connections opened at once from one address never exceed its bound, and
// every one closed gives its slot back (run with -race).
func TestConnLimitConcurrent(t *testing.T) {
	const perAddr = 4
	l, addr := limited(t, perAddr)
	one := h3test.Client(t, "127.0.0.1")
	var mu sync.Mutex
	var held []*quic.Conn
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			c, err := dialFrom(one, addr, http3.NextProtoH3)
			if err != nil {
				if !h3test.IsRefused(err) {
					t.Errorf("dial: %v", err)
				}
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(held) == 0 || len(held) > perAddr {
		t.Fatalf("%d connections held from one address, bound %d", len(held), perAddr)
	}
	if st := l.Stats(); st.Open != len(held) || int(st.RefusedPerAddress) < 16-len(held) {
		t.Fatalf("stats %+v for %d held of 16", st, len(held))
	}
	for _, c := range held {
		c.CloseWithError(0, "")
	}
	waitOpen(t, l, 0)
}
