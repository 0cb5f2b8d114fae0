package mesh

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/connlimit"
	"perigee/memtest"
	"perigee/telemetry"
)

// startOnBind starts a keyed member on its own sockets at bind, as a
// deployed node is (no faultnet in between), with tune's settings last.
func startOnBind(t *testing.T, id, bind, keys string, join []string, conns connlimit.Settings, tune ...func(*memberlist.Config)) *Cluster {
	t.Helper()
	cfg := Config{Bind: bind, KeyringFile: keys, Join: join, Timing: fastTiming, Streams: conns,
		Tuning: func(mc *memberlist.Config) {
			fastTuning(mc)
			mc.TCPTimeout = time.Minute // the flood is held for the whole test
			for _, f := range tune {
				f(mc)
			}
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
	joinsWhile(t, a, keys, "127.0.0.3 held its streams")
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

// Hosts without the key, at as many addresses as it takes to hold every
// stream slot, each send part of an encrypted message announced just under
// memberlist's 20 MiB: memberlist buffers what arrives before it can check
// the key. What all the streams together may make it hold is bounded by
// the in-flight budget, not by the slots times 20 MiB.
func TestStreamBytesFromManyAddressesAreBounded(t *testing.T) {
	keys := writeKeyring(t, base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	a := startOnBind(t, "a", "127.0.0.1:0", keys, nil, connlimit.Settings{})
	const addresses, each = 8, 2 << 20
	per := DefaultStreams.MaxPerAddress
	hdr := []byte{10, 0x01, 0x3f, 0xff, 0xff} // encryptMsg, then a length just under 20 MiB
	msg := append(hdr, make([]byte, each)...)
	before := memtest.LiveHeap()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	for i := range addresses {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(3+i))}}
		for range per {
			c, err := d.Dial("tcp", a.Addr())
			if err != nil {
				continue // refused
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				if _, err := c.Write(msg); err != nil {
					return // cut off
				}
				// Wait until the server has read what it will of it: it
				// either cuts the stream or waits for the rest.
				c.SetReadDeadline(time.Now().Add(3 * time.Second))
				c.Read(make([]byte, 1))
			})
		}
	}
	wg.Wait()
	grown := memtest.LiveHeap() - before
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	t.Logf("%d streams from %d addresses sent %d MiB each, %d cut; heap grew %.1f MiB", len(conns), addresses, each>>20, a.CutStreams(), float64(grown)/(1<<20))
	// memberlist's buffer may hold twice what it read; 16 MiB of slack.
	if limit := int64(2*(streamBudget+DefaultStreams.MaxTotal*freeStreamBytes) + 16<<20); grown > limit {
		t.Errorf("heap grew %d MiB under the flood, want under %d MiB", grown>>20, limit>>20)
	}
	if a.CutStreams() == 0 {
		t.Error("no stream was cut")
	}

	// A member still joins while the flood holds the budget: a small
	// push/pull fits the bytes every stream has free.
	joinsWhile(t, a, keys, "the flood held the streams' budget")
}

// bigReport is a report of id near maxReportSize that compresses no
// better than random bytes: the worst a push/pull can carry of a member.
func bigReport(rnd *rand.Rand, id string) *report {
	s := telemetry.NodeSample{RPS: 1, Services: map[string]telemetry.ServiceSample{}}
	for range 5 {
		s.Services[randomName(rnd, maxNameLen)] = telemetry.ServiceSample{RPS: rnd.Float64(), InFlight: rnd.Int64N(1 << 40)}
	}
	extra := map[string][]byte{"a": make([]byte, MaxExtraValue), "b": make([]byte, MaxExtraTotal-MaxExtraValue)}
	for _, v := range extra {
		for i := range v {
			v[i] = byte(rnd.Uint32())
		}
	}
	return &report{ID: id, Gen: rnd.Uint64(), Seq: rnd.Uint64(), Term: uint64(time.Now().Unix()), Sample: s, Extra: extra}
}

// bigSummary is a summary of region near maxSummaryBytes, of random ids.
func bigSummary(rnd *rand.Rand, region string) *summary {
	s := &summary{Region: region, Sender: randomName(rnd, 20), Gen: rnd.Uint64(), Seq: 1, Term: 1 << 40}
	for range 40 {
		s.Members = append(s.Members, summaryMember{ID: randomName(rnd, 20), Fresh: true, InFlight: rnd.Int64N(1 << 20)})
	}
	return s
}

func randomName(rnd *rand.Rand, n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[rnd.IntN(len(letters))]
	}
	return string(b)
}

// A push/pull's state stays within what a stream may carry and what a
// receiver takes, however large the region: maxPeers members of one
// region with the largest reports, and every summary a node holds.
func TestLocalStateOfTheLargestClusterFitsAStream(t *testing.T) {
	now := time.Now()
	c := leaderCluster(now)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range maxPeers - len(c.peers) {
		id := fmt.Sprintf("eu-%05d", i)
		c.addPeer(id, &peer{state: StateAlive, recv: now, rep: bigReport(rnd, id)}, "eu")
	}
	for i := range maxSummaries {
		region := fmt.Sprintf("r-%04d", i)
		c.summaries[region] = holdSummary(bigSummary(rnd, region), now)
	}
	b := (&delegate{c}).LocalState(false)
	items, err := decodeBundle(b)
	if err != nil {
		t.Fatalf("a receiver refuses the state of %d bytes: %v", len(b), err)
	}
	var reports, summaries int
	for _, it := range items {
		switch it[0] {
		case kindReport:
			reports++
		case kindSummary:
			summaries++
		}
	}
	t.Logf("state of %d members and %d regions: %d bytes, %d reports and %d summaries", len(c.peers), maxSummaries, len(b), reports, summaries)
	if len(b) > maxLocalStateBytes {
		t.Errorf("state is %d bytes, over maxLocalStateBytes %d", len(b), maxLocalStateBytes)
	}
	if summaries != maxSummaries || reports < (maxLocalStateBytes-maxSummaries*maxSummaryBytes)/(maxReportSize+8) {
		t.Errorf("state holds %d summaries and %d reports, want all %d summaries and the reports that fit", summaries, reports, maxSummaries)
	}
}

// The largest state a member sends (LocalState at its bound, of reports
// that do not compress) passes the stream bounds both ways: pushed to a
// node that serves the push/pull, and as the answer a joining node reads.
func TestLargestStatePassesTheStreamBounds(t *testing.T) {
	keys := writeKeyring(t, base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	// Only the joins below push/pull: each costs seconds under -race.
	noPushPull := func(mc *memberlist.Config) { mc.PushPullInterval = time.Hour }
	a := startOnBind(t, "a", "127.0.0.1:0", keys, nil, connlimit.Settings{}, noPushPull)
	b := startOnBind(t, "b", "127.0.0.2:0", keys, nil, connlimit.Settings{}, noPushPull)
	rnd := rand.New(rand.NewPCG(3, 4))
	now := time.Now()
	members := maxLocalStateBytes / maxReportSize
	// knows makes n hold the eu- members, without their reports, as a
	// push/pull's own node list would: a node takes reports of only a few
	// nodes memberlist has not shown it (maxOrphans).
	knows := func(n *Cluster) {
		n.mu.Lock()
		defer n.mu.Unlock()
		for i := range members {
			// Suspect: sent in push/pulls, yet no load for the node's loops.
			n.addPeer(fmt.Sprintf("eu-%05d", i), &peer{state: StateSuspect, recv: now}, "eu")
		}
	}
	knows(b)
	b.mu.Lock()
	for i := range members {
		id := fmt.Sprintf("eu-%05d", i)
		b.peers[id].rep = bigReport(rnd, id)
	}
	b.mu.Unlock()
	knows(a)
	state := (&delegate{b}).LocalState(false)
	sent := 0 // reports of the eu- members, b's own aside
	for _, it := range decodeItems(t, state) {
		if reps, err := decodeMessage(it); err == nil && strings.HasPrefix(reps[0].ID, "eu-") {
			sent++
		}
	}

	// b pushes its state to a, which reads it as an accepted stream.
	if _, err := b.ml.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	// a merges it after it has answered, so after Join returns.
	deadline := time.Now().Add(time.Minute)
	for heldReports(a, "eu-") < sent && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := heldReports(a, "eu-"); got != sent {
		t.Errorf("a holds %d of the %d reports b pushed in %d bytes", got, sent, len(state))
	}
	// c reads b's state as the answer to its own push/pull.
	c := startOnBind(t, "c", "127.0.0.4:0", keys, nil, connlimit.Settings{}, noPushPull)
	knows(c)
	if _, err := c.ml.Join([]string{b.Addr()}); err != nil {
		t.Fatal(err)
	}
	if got := heldReports(c, "eu-"); got != sent {
		t.Errorf("c holds %d of the %d reports b answered with in %d bytes", got, sent, len(state))
	}
	for _, n := range []*Cluster{a, b, c} {
		if cut := n.CutStreams(); cut != 0 {
			t.Errorf("%s cut %d streams", n.ID(), cut)
		}
	}
}

func decodeItems(t *testing.T, b []byte) [][]byte {
	t.Helper()
	items, err := decodeBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	return items
}

// heldReports counts the reports c holds of members whose ids start with
// prefix.
func heldReports(c *Cluster, prefix string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for id, p := range c.peers {
		if p.rep != nil && strings.HasPrefix(id, prefix) {
			n++
		}
	}
	return n
}

// A hostile peer answers our push/pull with an encrypted message announced
// just under memberlist's 20 MiB, and sends it: the answer is cut where the
// largest push/pull ends, with our reason, and counted.
func TestHostileAnswerToOurPushPullIsCut(t *testing.T) {
	keys := writeKeyring(t, base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	a := startOnBind(t, "a", "127.0.0.1:0", keys, nil, connlimit.Settings{})
	ln, err := net.Listen("tcp", "127.0.0.5:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const announced = 20<<20 - 1
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		c.Read(make([]byte, 64<<10)) // a's push
		c.Write([]byte{10, announced >> 24, announced >> 16 & 0xff, announced >> 8 & 0xff, announced & 0xff})
		junk := make([]byte, 64<<10)
		for sent := 0; sent < announced; sent += len(junk) {
			if _, err := c.Write(junk); err != nil {
				return // a is done with it
			}
		}
	}()
	grown := memtest.PeakGrowthDuring(func() { _, err = a.ml.Join([]string{ln.Addr().String()}) })
	// Logged only: the peak counts garbage and whatever tests run beside
	// this one. The cut is what bounds it: below, by its reason.
	t.Logf("heap peaked %.1f MiB above the start during the join", float64(grown)/(1<<20))
	if err == nil || !strings.Contains(err.Error(), errStreamTooLong.Error()) {
		t.Errorf("join of a hostile peer: %v, want %q", err, errStreamTooLong)
	}
	if cut := a.CutStreams(); cut != 1 {
		t.Errorf("%d streams cut, want 1", cut)
	}
}

// joinsWhile fails t unless a member started on 127.0.0.2 joins a within
// 20 s while what holds a's streams.
func joinsWhile(t *testing.T, a *Cluster, keys, what string) {
	t.Helper()
	startOnBind(t, "b", "127.0.0.2:0", keys, []string{a.Addr()}, connlimit.Settings{})
	deadline := time.Now().Add(20 * time.Second)
	for a.ml.NumMembers() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("a member did not join while " + what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
