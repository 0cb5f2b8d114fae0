package mesh

import (
	"bytes"
	"errors"
	"log"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"

	"perigee/connlimit"
	"perigee/files/filestest"
	"perigee/telemetry"
)

func TestConfigValidate(t *testing.T) {
	keys := writeKeyring(t, "MDEyMzQ1Njc4OWFiY2RlZg==")
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Bind: "127.0.0.1:7946"}, ""},
		{Config{Bind: "127.0.0.1:7946", Profile: "wan", Join: []string{"seeds.example.net:7946"}}, ""},
		{Config{Bind: "127.0.0.1:7946", Profile: "metro"}, `mesh.profile: "metro" is not lan or wan`},
		{Config{Bind: "localhost:7946"}, `mesh.bind: "localhost:7946": "localhost" is not an IP address`},
		{Config{Bind: "127.0.0.1"}, "mesh.bind:"},
		{Config{Bind: "127.0.0.1:99999"}, `bad port "99999"`},
		{Config{Bind: "127.0.0.1:1", Advertise: "x"}, "mesh.advertise:"},
		{Config{Bind: "127.0.0.1:1", Join: []string{"a:1", "b"}}, `mesh.join[1]: "b": want host:port`},
		{Config{Bind: "127.0.0.1:1", Timing: Timing{Sample: -1}}, "must not be negative"},
		{Config{Bind: "[::1]:7946"}, ""},
		// Reachable from outside the host: gossip must be keyed.
		{Config{Bind: "0.0.0.0:7946"}, "mesh.keyring: required"},
		{Config{Bind: "[::]:7946"}, "mesh.keyring: required"},
		{Config{Bind: "10.1.2.3:7946"}, "mesh.keyring: required"},
		{Config{Bind: "127.0.0.1:7946", Advertise: "203.0.113.7:7946"}, "mesh.keyring: required"},
		{Config{Bind: "0.0.0.0:7946", KeyringFile: keys}, ""},
		{Config{Bind: "0.0.0.0:7946", KeyringFile: "/nonexistent/mesh.keys"}, "mesh.keyring:"},
		{Config{Bind: "127.0.0.1:7946", KeyringFile: writeKeyring(t, "c2hvcnQ=")}, "key is 5 bytes"},
		// Stream bounds: zero takes the default, nothing means unbounded.
		{Config{Bind: "127.0.0.1:1", Streams: connlimit.Settings{MaxTotal: 8}}, ""},
		{Config{Bind: "127.0.0.1:1", Streams: connlimit.Settings{MaxTotal: -1}}, "mesh.streams.max_total: max_total must be 1..1048576, got -1"},
		{Config{Bind: "127.0.0.1:1", Streams: connlimit.Settings{MaxTotal: 4, MaxPerAddress: 8}}, "mesh.streams.max_per_address: max_per_address (8) is over max_total (4)"},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// Start refuses what Validate refuses: no unkeyed mesh on a public bind.
func TestStartRefusesUnkeyedPublicBind(t *testing.T) {
	meta := NodeMeta{ID: "n", Region: "eu"}
	sample := func() telemetry.NodeSample { return telemetry.NodeSample{} }
	c, err := Start(t.Context(), Config{Bind: "0.0.0.0:0"}, meta, sample, slog.New(slog.DiscardHandler))
	if err == nil {
		c.Shutdown()
		t.Fatal("an unkeyed mesh bound to 0.0.0.0 started")
	}
	if !strings.Contains(err.Error(), "mesh.keyring: required") {
		t.Errorf("err = %v, want it to name mesh.keyring", err)
	}
}

func TestProfiles(t *testing.T) {
	lan, err := Config{Bind: "127.0.0.1:7946"}.memberlistConfig("n")
	if err != nil {
		t.Fatal(err)
	}
	wan, err := Config{Bind: "127.0.0.1:7946", Profile: "wan"}.memberlistConfig("n")
	if err != nil {
		t.Fatal(err)
	}
	if lan.ProbeInterval != time.Second || wan.ProbeInterval != 5*time.Second || lan.BindPort != 7946 {
		t.Errorf("probe intervals lan %v wan %v, port %d", lan.ProbeInterval, wan.ProbeInterval, lan.BindPort)
	}
	if got := (Config{Timing: Timing{Refresh: time.Minute}}).timing(); got.Refresh != time.Minute || got.Sample != profiles["lan"].Sample {
		t.Errorf("timing overrides = %+v", got)
	}
}

func TestParseKeyring(t *testing.T) {
	k16 := "MDEyMzQ1Njc4OWFiY2RlZg=="
	p := writeKeyring(t, "# rotated in 2026", k16, "", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	keys, err := ParseKeyring(p)
	if err != nil || len(keys) != 2 || string(keys[0]) != "0123456789abcdef" {
		t.Fatalf("ParseKeyring = %q, %v", keys, err)
	}
	for _, tc := range []struct {
		lines []string
		want  string
	}{
		{[]string{k16, "not base64!"}, ":2: key is not valid base64"},
		{[]string{k16, "", "c2hvcnQ="}, ":3: key is 5 bytes, want 16, 24 or 32"},
		{[]string{"# only a comment"}, "no keys"},
	} {
		p := writeKeyring(t, tc.lines...)
		_, err := ParseKeyring(p)
		if err == nil || !strings.Contains(err.Error(), p+tc.want) && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseKeyring(%q) = %v, want %q", tc.lines, err, tc.want)
		}
	}
	if _, err := ParseKeyring("/nonexistent/mesh.keys"); err == nil {
		t.Error("missing keyring file accepted")
	}
	_, err = Config{Bind: "127.0.0.1:1", KeyringFile: writeKeyring(t, "c2hvcnQ=")}.memberlistConfig("n")
	if err == nil || !strings.Contains(err.Error(), "mesh.keys:1:") {
		t.Errorf("config with a short key = %v, want file:line", err)
	}
}

func TestNodeMeta(t *testing.T) {
	good := NodeMeta{ID: "par-1", Region: "eu-west", Zone: "a", Lat: 48.85, Lon: 2.35, PublicURL: "https://par-1.example.net", Capacity: 8, Version: "1.0"}
	b, err := good.encode(1700000000000000000)
	if err != nil || good.Validate() != nil {
		t.Fatal(err, good.Validate())
	}
	if got, gen, err := decodeMeta(b); err != nil || got != good || gen != 1700000000000000000 {
		t.Errorf("decodeMeta = %+v, %d, %v", got, gen, err)
	}
	// A node of a release that sends no generation still decodes.
	if _, gen, err := decodeMeta(append([]byte{metaFormat}, `{"id":"a","region":"eu"}`...)); err != nil || gen != 0 {
		t.Errorf("metadata without a generation: %d, %v", gen, err)
	}
	bad := []NodeMeta{
		{Region: "eu"},
		{ID: "a b", Region: "eu"},
		{ID: "a", Region: ""},
		{ID: "a", Region: "eu", Lat: 91},
		{ID: "a", Region: "eu", PublicURL: "ftp://x"},
		{ID: "a", Region: "eu", Capacity: -1},
		{ID: "a", Region: "eu", Version: strings.Repeat("v", 500)},
	}
	for _, m := range bad {
		if m.Validate() == nil {
			t.Errorf("Validate(%+v) accepted", m)
		}
	}
	for _, raw := range [][]byte{nil, {9, '{'}, {metaFormat, '{'}, append([]byte{metaFormat}, `{"id":"x y","region":"eu"}`...)} {
		if _, _, err := decodeMeta(raw); err == nil {
			t.Errorf("decodeMeta(%q) accepted", raw)
		}
	}
}

func sampleReport() *report {
	var h telemetry.Histogram
	for i := range 100 {
		h.Observe(time.Duration(i) * time.Millisecond)
	}
	c := coordinate.NewCoordinate(coordinate.DefaultConfig())
	c.Vec[0], c.Height = 0.25, 0.0001
	return &report{
		ID: "par-1", Gen: 1700000000000000000, Seq: 42, Age: 1500 * time.Millisecond, Term: 3, Leads: true, Leaving: true,
		Sample: telemetry.NodeSample{Window: time.Second, RPS: 1250.5, InFlight: 17, CPU: 1.5, MemBytes: 1 << 30,
			Services: map[string]telemetry.ServiceSample{
				"api":    {RPS: 1000, ErrorRate: 0.25, InFlight: 12, Queued: 3, Latency: h.Snapshot(), Backends: 4, HealthyBackends: 3},
				"static": {RPS: 250.5, Backends: 2, HealthyBackends: 2},
			}},
		Coord: c,
		Extra: map[string][]byte{"geo": []byte("summary")},
	}
}

func TestReportRoundTrip(t *testing.T) {
	in := sampleReport()
	b, err := encodeMessage(kindReport, []*report{in})
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeMessage(b)
	if err != nil || len(out) != 1 {
		t.Fatalf("decode = %v, %v", out, err)
	}
	got := out[0]
	if got.ID != in.ID || got.Gen != in.Gen || got.Seq != in.Seq || got.Age != in.Age || got.Term != in.Term || !got.Leads || !got.Leaving {
		t.Errorf("header = %+v", got)
	}
	api := got.Sample.Services["api"]
	if got.Sample.RPS != 1250.5 || got.Sample.InFlight != 17 || api.HealthyBackends != 3 || api.Latency.Count() != 100 ||
		api.Latency.Quantile(0.99) != in.Sample.Services["api"].Latency.Quantile(0.99) || string(got.Extra["geo"]) != "summary" {
		t.Errorf("sample = %+v", got.Sample)
	}
	if got.Coord == nil || got.Coord.Vec[0] != 0.25 {
		t.Errorf("coordinate = %+v", got.Coord)
	}
	st, err := encodeMessage(kindState, []*report{in, {ID: "b", Gen: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if reps, err := decodeMessage(st); err != nil || len(reps) != 2 || reps[1].ID != "b" {
		t.Errorf("state = %v, %v", reps, err)
	}
}

func TestReportTooBigFallsBack(t *testing.T) {
	r := sampleReport()
	r.Sample.Services = map[string]telemetry.ServiceSample{}
	for i := range 20 {
		r.Sample.Services[strings.Repeat("s", 10)+string(rune('A'+i))] = sampleReport().Sample.Services["api"]
	}
	if _, err := encodeMessage(kindReport, []*report{r}); !errors.Is(err, errTooBig) {
		t.Fatalf("20 services with histograms: %v, want errTooBig", err)
	}
	r.Sample.Services = withoutHistograms(r.Sample.Services)
	if _, err := encodeMessage(kindReport, []*report{r}); err != nil {
		t.Errorf("without histograms: %v", err)
	}
}

// Every truncation and many corruptions of a valid message must be refused
// or decoded, never panic; truncations must all be refused.
func TestDecodeRejectsCorruptMessages(t *testing.T) {
	b, _ := encodeMessage(kindReport, []*report{sampleReport()})
	for i := range b {
		if _, err := decodeMessage(b[:i]); err == nil {
			t.Errorf("truncated at %d of %d accepted", i, len(b))
		}
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0xff
		decodeMessage(c)
	}
	for _, bad := range [][]byte{append(bytes.Clone(b), 0), {kindReport, formatVersion + 1}, {7, formatVersion}, {kindState, formatVersion, 0xff, 0xff, 0xff, 0x7f}} {
		if _, err := decodeMessage(bad); !errors.Is(err, errMalformed) {
			t.Errorf("decodeMessage(%x...) = %v, want errMalformed", bad[:min(len(bad), 8)], err)
		}
	}
	nan := sampleReport()
	nan.Sample.CPU = math.NaN()
	nb, _ := encodeMessage(kindReport, []*report{nan})
	if _, err := decodeMessage(nb); err == nil {
		t.Error("NaN cpu accepted")
	}
}

func FuzzDecodeMessage(f *testing.F) {
	b, _ := encodeMessage(kindReport, []*report{sampleReport()})
	st, _ := encodeMessage(kindState, []*report{sampleReport(), {ID: "x"}})
	f.Add(b)
	f.Add(st)
	f.Add([]byte{kindState, formatVersion, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		reps, err := decodeMessage(b)
		if err != nil {
			return
		}
		for _, r := range reps {
			if checkName("id", r.ID) != nil {
				t.Fatalf("decoded report with bad id %q", r.ID)
			}
		}
		if _, err := encodeMessage(kindState, reps); err != nil {
			t.Fatalf("a decoded report does not re-encode: %v", err)
		}
	})
}

func FuzzDecodeCoord(f *testing.F) {
	f.Add(encodeCoord(coordinate.NewCoordinate(coordinate.DefaultConfig())))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := decodeCoord(b); err == nil && (len(c.Vec) != coordDims || !c.IsValid()) {
			t.Fatalf("accepted bad coordinate %+v", c)
		}
	})
}

func TestBroadcastAgesAndInvalidates(t *testing.T) {
	sum := &summary{Region: "eu", Sender: "n1", Gen: 7, Seq: 42, Age: time.Second, Members: []summaryMember{{ID: "n1", Fresh: true}}}
	at := time.Now().Add(-2 * time.Second)
	b := newSummaryBroadcast(sum, false, at)
	got, err := decodeSummary(b.Message())
	if err != nil {
		t.Fatal(err)
	}
	if got.Age < sum.Age+2*time.Second || got.Seq != 42 || got.Region != "eu" {
		t.Errorf("relayed summary %+v, want seq 42 and an age of at least %v", got, sum.Age+2*time.Second)
	}
	if len(b.Message()) != len(b.msg) {
		t.Error("message length changed between transmissions")
	}
	if c, _, err := decodeCompactSummary(newSummaryBroadcast(sum, true, at).Message()); err != nil || c.Age < sum.Age+2*time.Second || c.Seq != 42 {
		t.Errorf("relayed compact summary %+v, %v; want seq 42 and an age of at least %v", c, err, sum.Age+2*time.Second)
	}
	bt, err := decodeSumBeat(newSumBeatBroadcast(sumBeat{Region: "eu", Sender: "n1", Gen: 7, Seq: 43, Base: 42}, at).Message())
	if err != nil || bt.Age < 2*time.Second || bt.Base != 42 {
		t.Errorf("relayed summary beat %+v, %v", bt, err)
	}
	other := newSummaryBroadcast(&summary{Region: "us", Sender: "n2"}, false, at)
	newer := newSummaryBroadcast(&summary{Region: "eu", Sender: "n1", Seq: 43}, true, at)
	if !newer.Invalidates(b) || newer.Invalidates(other) {
		t.Error("a summary must replace only the queued summary of the same region")
	}
}

func TestSignificantChange(t *testing.T) {
	base := telemetry.NodeSample{RPS: 100, CPU: 1, Services: map[string]telemetry.ServiceSample{"api": {RPS: 100, Backends: 2, HealthyBackends: 2}}}
	same := base
	same.RPS = 105
	if significant(base, same) {
		t.Error("5% jitter counted as a change")
	}
	for name, mod := range map[string]func(*telemetry.NodeSample){
		"rps": func(s *telemetry.NodeSample) { s.RPS = 150 },
		"cpu": func(s *telemetry.NodeSample) { s.CPU = 1.5 },
		"health": func(s *telemetry.NodeSample) {
			s.Services = map[string]telemetry.ServiceSample{"api": {RPS: 100, Backends: 2, HealthyBackends: 1}}
		},
		"service": func(s *telemetry.NodeSample) { s.Services = nil },
	} {
		s := base
		mod(&s)
		if !significant(base, s) {
			t.Errorf("%s change not significant", name)
		}
	}
}

func TestSetExtraLimits(t *testing.T) {
	c := &Cluster{}
	if err := c.SetExtra("geo", make([]byte, MaxExtraValue+1)); err == nil || !strings.Contains(err.Error(), "limit is 256") {
		t.Errorf("oversized value: %v", err)
	}
	if err := c.SetExtra(strings.Repeat("k", MaxExtraKey+1), nil); err == nil {
		t.Error("oversized key accepted")
	}
	for i := range 2 {
		if err := c.SetExtra(string(rune('a'+i)), make([]byte, 250)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetExtra("c", make([]byte, 100)); err == nil || !strings.Contains(err.Error(), "bytes of extras") {
		t.Errorf("total over the limit: %v", err)
	}
	if err := c.SetExtra("a", nil); err != nil || len(c.extra) != 1 {
		t.Errorf("removing a key: %v, %d left", err, len(c.extra))
	}
}

func TestEventQueueDropsOldest(t *testing.T) {
	q := newEventQueue("n", 2)
	for _, k := range []string{"1", "2", "3"} {
		q.push(k, nil)
	}
	if a, b := <-q.ch, <-q.ch; a.Kind != "2" || b.Kind != "3" {
		t.Errorf("kept %s, %s; want the newest two", a.Kind, b.Kind)
	}
}

func TestMemberlistLogRoutedToSlog(t *testing.T) {
	var buf bytes.Buffer
	l := memberlistLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	l.Printf("[DEBUG] memberlist: chatter")
	l.Printf("[WARN] memberlist: Was able to connect to x but other probes failed")
	out := buf.String()
	if strings.Contains(out, "chatter") || !strings.Contains(out, "level=WARN") || !strings.Contains(out, `msg="Was able`) {
		t.Errorf("log output %q", out)
	}
}

// Past logBurst warnings in a window, memberlist's lines are counted, and
// the count is logged with the next line let through.
func TestMemberlistWarningsAreBounded(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1700000000, 0)
	w := newSlogWriter(slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return now })
	l := log.New(w, "", 0)
	for range logBurst + 5 {
		l.Printf("[ERR] memberlist: Decrypt packet failed")
	}
	l.Printf("[INFO] memberlist: not bounded")
	if got := strings.Count(buf.String(), "Decrypt packet failed"); got != logBurst {
		t.Errorf("%d of %d lines logged in one window, want %d", got, logBurst+5, logBurst)
	}
	if !strings.Contains(buf.String(), "not bounded") {
		t.Error("an info line was dropped")
	}
	now = now.Add(logWindow)
	buf.Reset()
	l.Printf("[WARN] memberlist: next window")
	if out := buf.String(); !strings.Contains(out, "next window") || !strings.Contains(out, "dropped_before=5") {
		t.Errorf("next window's line %q, want it to count the 5 not logged", out)
	}
}

var _ memberlist.NamedBroadcast = (*broadcast)(nil)

func TestBeatRoundTripAndRejects(t *testing.T) {
	in := beat{ID: "par-1", Gen: 1700000000000000000, Seq: 90, Base: 42, Age: 1500 * time.Millisecond}
	b := encodeBeat(in)
	if got, err := decodeBeat(b); err != nil || got != in {
		t.Fatalf("decodeBeat = %+v, %v; want %+v", got, err, in)
	}
	for i := range b {
		if _, err := decodeBeat(b[:i]); err == nil {
			t.Errorf("truncated at %d of %d accepted", i, len(b))
		}
	}
	after := encodeBeat(beat{ID: "x", Seq: 1})
	after[len(after)-5] = 2 // base two before sequence 1
	for _, bad := range [][]byte{append(bytes.Clone(b), 0), after, encodeBeat(beat{ID: "a b"})} {
		if _, err := decodeBeat(bad); !errors.Is(err, errMalformed) {
			t.Errorf("decodeBeat(%x) = %v, want errMalformed", bad, err)
		}
	}
}

func FuzzDecodeBeat(f *testing.F) {
	f.Add(encodeBeat(beat{ID: "n1", Gen: 1, Seq: 5, Base: 3, Age: time.Second}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if bt, err := decodeBeat(b); err == nil && (bt.Base > bt.Seq || checkName("id", bt.ID) != nil) {
			t.Fatalf("accepted bad beat %+v", bt)
		}
	})
}

// A negative age, from a clock read just before another goroutine stored
// a later one, goes out as zero rather than wrapping to 49 days.
func TestNegativeAgeSentAsZero(t *testing.T) {
	b := newSummaryBroadcast(&summary{Region: "eu", Sender: "n1", Age: -time.Second}, false, time.Now())
	s, err := decodeSummary(b.Message())
	if err != nil || s.Age != 0 {
		t.Errorf("age = %v, %v; want 0", s, err)
	}
}

// beatCluster is a Cluster without memberlist, holding report 5 of n1.
func beatCluster() *Cluster {
	c := &Cluster{
		meta: NodeMeta{ID: "self", Region: "eu"}, timing: fastTiming, log: slog.New(slog.DiscardHandler),
		peers: map[string]*peer{}, regions: map[string]map[string]*peer{}, summaries: map[string]*heldSummary{},
		outbox: make(chan direct, outboxSize), streams: make(chan direct, streamsSize),
	}
	c.beats = &memberlist.TransmitLimitedQueue{RetransmitMult: 3, NumNodes: c.numNodes}
	c.queue = &memberlist.TransmitLimitedQueue{RetransmitMult: 3, NumNodes: c.numNodes}
	addPeer(c, "n1", "eu", "127.0.0.1:1").rep = &report{ID: "n1", Gen: 7, Seq: 5, Sample: telemetry.NodeSample{RPS: 10}}
	return c
}

// addPeer makes id, of region, a live member of c at addr.
func addPeer(c *Cluster, id, region, addr string) *peer {
	p := &peer{state: StateAlive, addr: addr}
	c.peers[id] = p
	c.setMetaLocked(id, p, NodeMeta{ID: id, Region: region})
	return p
}

// A beat comes straight from its node to each member of its region, so it
// is not relayed.
func TestBeatRefreshesHeldReport(t *testing.T) {
	c := beatCluster()
	now := time.Now()
	c.mergeBeat(beat{ID: "n1", Gen: 7, Seq: 8, Base: 5, Age: time.Second}, now)
	p := c.peers["n1"]
	if p.rep.Seq != 8 || p.rep.Age != time.Second || p.rep.Sample.RPS != 10 || !p.recv.Equal(now) {
		t.Errorf("after the beat: %+v received %v", p.rep, p.recv)
	}
	if c.beats.NumQueued() != 0 || len(c.outbox) != 0 {
		t.Errorf("a beat was relayed")
	}
	c.mergeBeat(beat{ID: "n1", Gen: 7, Seq: 8, Base: 5}, now)
	if p.rep.Age != time.Second {
		t.Error("a beat seen before was applied again")
	}
	if len(c.streams) != 0 {
		t.Error("repair asked although nothing was missed")
	}
}

// A beat whose base we do not hold means we missed a report: we ask its
// node, once per refresh interval, and do not show old figures as new.
func TestBeatAfterMissedReportAsksForRepair(t *testing.T) {
	c := beatCluster()
	now := time.Now()
	c.mergeBeat(beat{ID: "n1", Gen: 7, Seq: 9, Base: 6}, now)
	if c.peers["n1"].rep.Seq != 5 {
		t.Error("a beat for a report we missed was applied")
	}
	if len(c.streams) != 1 {
		t.Fatal("no repair asked of n1")
	}
	if r := <-c.streams; r.to.Name != "n1" || r.to.Address() != "127.0.0.1:1" {
		t.Fatalf("repair asked of %s at %s, want n1 at 127.0.0.1:1", r.to.Name, r.to.Address())
	} else if from, err := decodeWant(r.msg); err != nil || from != "self" {
		t.Errorf("repair message: want from %q, %v; want from self", from, err)
	}
	c.mergeBeat(beat{ID: "n1", Gen: 7, Seq: 10, Base: 6}, now.Add(fastTiming.Refresh/2))
	if len(c.streams) != 0 {
		t.Error("repair asked again within the refresh interval")
	}
	c.mergeBeat(beat{ID: "n1", Gen: 8, Seq: 1, Base: 1}, now.Add(fastTiming.Refresh))
	if len(c.streams) != 1 {
		t.Error("a restarted node's beat did not ask for its new report")
	}
}

func TestWantRoundTripAndRejects(t *testing.T) {
	if from, err := decodeWant(encodeWant("par-1")); err != nil || from != "par-1" {
		t.Fatalf("decodeWant = %q, %v", from, err)
	}
	b := encodeWant("par-1")
	for i := range b {
		if _, err := decodeWant(b[:i]); err == nil {
			t.Errorf("truncated at %d of %d accepted", i, len(b))
		}
	}
	for _, bad := range [][]byte{append(bytes.Clone(b), 0), encodeWant("a b"), encodeWant(""), {kindWant, formatVersion + 1, 1, 'a'}} {
		if _, err := decodeWant(bad); !errors.Is(err, errMalformed) {
			t.Errorf("decodeWant(%x) = %v, want errMalformed", bad, err)
		}
	}
}

func FuzzDecodeWant(f *testing.F) {
	f.Add(encodeWant("n1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if from, err := decodeWant(b); err == nil && checkName("id", from) != nil {
			t.Fatalf("accepted bad asker %q", from)
		}
	})
}

// A want is answered only to a live member, at its own address, and at
// most twice per refresh interval: a flood of wants costs one answer.
func TestWantAnsweredOnlyToLiveMembersAndRateLimited(t *testing.T) {
	c := beatCluster()
	c.lastSent = &report{ID: "self", Gen: 1, Seq: 3}
	now := time.Now()
	c.answerWant("stranger", now)
	c.peers["gone"] = &peer{state: StateDead, addr: "127.0.0.1:2"}
	c.answerWant("gone", now)
	if len(c.streams) != 0 {
		t.Fatal("answered a member that is not alive")
	}
	for range 100 {
		c.answerWant("n1", now)
	}
	if len(c.streams) != 1 {
		t.Fatalf("%d answers queued for 100 wants, want 1", len(c.streams))
	}
	r := <-c.streams
	items, err := decodeBundle(r.msg)
	if err != nil || len(items) != 1 {
		t.Fatalf("answer %x: %d items, %v; want a bundle of our report", r.msg, len(items), err)
	}
	reps, err := decodeMessage(items[0])
	if r.to.Address() != "127.0.0.1:1" || err != nil || len(reps) != 1 || reps[0].Seq != 3 || items[0][0] != kindReport {
		t.Errorf("answer to %s: %v, %v", r.to.Address(), reps, err)
	}
	c.answerWant("n1", now.Add(fastTiming.Refresh))
	if len(c.streams) != 1 {
		t.Error("no answer a refresh interval later")
	}
}

// The geo router sets its client-RTT summary every second: the same bytes
// again must not make the next sample gossip a full report, which every
// node then relays (docs/benchmarks.md: 500 nodes doing so every second).
func TestSetExtraUnchangedIsNotAChange(t *testing.T) {
	c := &Cluster{}
	if err := c.SetExtra("rtt", []byte("summary")); err != nil || !c.dirty {
		t.Fatalf("a new extra: %v, dirty %v", err, c.dirty)
	}
	c.dirty = false
	if err := c.SetExtra("rtt", []byte("summary")); err != nil || c.dirty {
		t.Errorf("the same extra again: %v, dirty %v", err, c.dirty)
	}
	if err := c.SetExtra("none", nil); err != nil || c.dirty {
		t.Errorf("removing an extra that is not set: %v, dirty %v", err, c.dirty)
	}
	if err := c.SetExtra("rtt", []byte("summary2")); err != nil || !c.dirty {
		t.Errorf("a changed extra: %v, dirty %v", err, c.dirty)
	}
}

// A direct send that finds its queue full is dropped, and counted: a
// receiver's want or a region's report lost there would otherwise leave no
// trace.
func TestFullSendQueueDropsAreCounted(t *testing.T) {
	c := &Cluster{outbox: make(chan direct, 1), streams: make(chan direct, 1)}
	for range 3 {
		c.send(direct{msg: []byte("x")})
	}
	c.send(direct{msg: []byte("y"), reliable: true})
	if got := c.UnsentMessages(); got != 2 {
		t.Fatalf("%d counted, want 2 (two UDP sends past a one-slot queue)", got)
	}
}

// Load figures count or rate things: a report or summary with a negative
// one, an error rate outside 0..1, or a count so large that a region's sum
// wraps, is refused. A member that holds the key could otherwise cancel
// the region's real load (a negative rate makes the region's sum as low as
// it likes: the leader's policy scales down to the minimum), which a member
// that merely under-reports cannot. The sender clamps its own figures, so
// an honest glitch never gets its report refused.
func TestOutOfDomainFiguresAreRefused(t *testing.T) {
	bad := map[string]func(*report){
		"negative rps":           func(r *report) { r.Sample.RPS = -1e30 },
		"negative cpu":           func(r *report) { r.Sample.CPU = -4 },
		"negative in-flight":     func(r *report) { r.Sample.InFlight = -5 },
		"wrapping in-flight":     func(r *report) { r.Sample.InFlight = math.MaxInt64 },
		"negative service rps":   func(r *report) { s := r.Sample.Services["api"]; s.RPS = -1e30; r.Sample.Services["api"] = s },
		"error rate above one":   func(r *report) { s := r.Sample.Services["api"]; s.ErrorRate = 3e38; r.Sample.Services["api"] = s },
		"negative error rate":    func(r *report) { s := r.Sample.Services["api"]; s.ErrorRate = -1; r.Sample.Services["api"] = s },
		"negative queue":         func(r *report) { s := r.Sample.Services["api"]; s.Queued = -100; r.Sample.Services["api"] = s },
		"wrapping service queue": func(r *report) { s := r.Sample.Services["api"]; s.Queued = math.MaxInt64; r.Sample.Services["api"] = s },
		"rps not a number":       func(r *report) { r.Sample.RPS = math.NaN() },
		"rps past float32":       func(r *report) { r.Sample.RPS = 1e39 },
		"cpu not a number":       func(r *report) { r.Sample.CPU = math.NaN() },
		"service rps past float32": func(r *report) {
			s := r.Sample.Services["api"]
			s.RPS = math.Inf(1)
			r.Sample.Services["api"] = s
		},
		"error rate not a number": func(r *report) {
			s := r.Sample.Services["api"]
			s.ErrorRate = math.NaN()
			r.Sample.Services["api"] = s
		},
		"negative service inflight": func(r *report) {
			s := r.Sample.Services["api"]
			s.InFlight = math.MinInt64
			r.Sample.Services["api"] = s
		},
	}
	for name, spoil := range bad {
		rep := sampleReport()
		spoil(rep)
		b, err := encodeMessage(kindReport, []*report{rep})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeMessage(b); !errors.Is(err, errMalformed) {
			t.Errorf("%s: decoded without error (%v)", name, err)
		}
		// Our own sample is clamped before it is sent, so it stays readable.
		rep.Sample = clampFigures(rep.Sample)
		if b, err = encodeMessage(kindReport, []*report{rep}); err != nil {
			t.Fatal(err)
		}
		if _, err := decodeMessage(b); err != nil {
			t.Errorf("%s: our own clamped report is refused: %v", name, err)
		}
	}

	// Through the region view: one peer's negative rate does not cancel
	// another's load.
	c := beatCluster()
	now := time.Now()
	honest := &report{ID: "n1", Gen: 7, Seq: 6, Sample: telemetry.NodeSample{RPS: 500,
		Services: map[string]telemetry.ServiceSample{"api": {RPS: 500, InFlight: 40}}}}
	c.merge(honest, now)
	addPeer(c, "n2", "eu", "127.0.0.1:2")
	liar := &report{ID: "n2", Gen: 1, Seq: 1, Sample: telemetry.NodeSample{RPS: -1e30,
		Services: map[string]telemetry.ServiceSample{"api": {RPS: -1e30, InFlight: -1 << 40}}}}
	b, err := encodeMessage(kindReport, []*report{liar})
	if err != nil {
		t.Fatal(err)
	}
	c.handle(b, true, now)
	if v := c.Region("eu"); v.RPS < 500 || v.Services["api"].RPS < 500 || v.Services["api"].InFlight < 40 {
		t.Errorf("region view rps %g, api rps %g, api in-flight %d: a peer's negative figures cancelled n1's", v.RPS, v.Services["api"].RPS, v.Services["api"].InFlight)
	}

	for name, spoil := range map[string]func(*summary){
		"negative rps":              func(s *summary) { s.RPS = -1 },
		"negative cpu":              func(s *summary) { s.CPU = -1 },
		"negative in-flight":        func(s *summary) { s.InFlight = -1 },
		"wrapping in-flight":        func(s *summary) { s.InFlight = math.MaxInt64 },
		"negative member in-flight": func(s *summary) { s.Members[0].InFlight = -1 },
	} {
		s := &summary{Region: "us", Sender: "x", Gen: 1, Seq: 1, Term: 2, RPS: 10, InFlight: 3, Members: []summaryMember{{ID: "x", Fresh: true, InFlight: 3}}}
		spoil(s)
		if _, err := decodeSummary(encodeSummary(s)); !errors.Is(err, errMalformed) {
			t.Errorf("summary with %s: decoded without error (%v)", name, err)
		}
	}
}

// Vivaldi coordinates are in seconds, and a peer's reach ours through
// every ping ack and report. One coordinate 3e38 s out (finite, so
// "valid") moved ours 1e13 s away at once, where honest updates could not
// bring it back; and ours then travels in our own acks and reports, so it
// would spread to every node. A coordinate no round trip could give is
// refused like a malformed one.
func TestOutlandishCoordinateIsRefused(t *testing.T) {
	cfg := coordinate.DefaultConfig()
	cfg.Dimensionality = coordDims
	honest := coordinate.NewCoordinate(cfg)
	honest.Vec[0] = 0.005
	spoil := map[string]func(*coordinate.Coordinate){
		"far vector":      func(c *coordinate.Coordinate) { c.Vec[0] = 3e38 },
		"far height":      func(c *coordinate.Coordinate) { c.Height = 1e20 },
		"negative height": func(c *coordinate.Coordinate) { c.Height = -1 },
		"huge error":      func(c *coordinate.Coordinate) { c.Error = 1e30 },
		"huge adjustment": func(c *coordinate.Coordinate) { c.Adjustment = -1e30 },
	}
	for name, f := range spoil {
		evil := honest.Clone()
		f(evil)
		if _, err := decodeCoord(encodeCoord(evil)); !errors.Is(err, errMalformed) {
			t.Errorf("%s: decoded (%v)", name, err)
		}
		rep := sampleReport()
		rep.Coord = evil
		b, _ := encodeMessage(kindReport, []*report{rep})
		if got, err := decodeMessage(b); err == nil && got[0].Coord != nil {
			t.Errorf("%s: a report kept it", name)
		}
	}

	c := beatCluster()
	c.coords, _ = newCoordClient()
	d := &delegate{c}
	n1 := &memberlist.Node{Name: "n1"}
	for range 20 {
		d.NotifyPingComplete(n1, 10*time.Millisecond, encodeCoord(honest))
	}
	evil := honest.Clone()
	evil.Vec[0] = 3e38
	d.NotifyPingComplete(&memberlist.Node{Name: "n2"}, 10*time.Millisecond, encodeCoord(evil))
	for range 5 {
		d.NotifyPingComplete(n1, 10*time.Millisecond, encodeCoord(honest))
	}
	if rtt := c.coords.GetCoordinate().DistanceTo(honest); rtt <= 0 || rtt > time.Second {
		t.Errorf("after one outlandish ack our coordinate is %v from an honest peer 10 ms away", rtt)
	}
}

// A keyring is a few lines. A path that names something else (a huge file
// written there by mistake, a device) must be refused after a bounded read
// with a clear error: validate, start and every reload read it.
func TestKeyringFileIsReadBounded(t *testing.T) {
	huge := filepath.Join(t.TempDir(), "mesh.keys")
	if err := os.WriteFile(huge, []byte("MDEyMzQ1Njc4OWFiY2RlZg==\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, 256<<20); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ParseKeyring(huge)
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("reading a 256 MiB keyring allocated %d MiB (err %v)", grew>>20, err)
	}
	if err == nil || !strings.Contains(err.Error(), "KiB") {
		t.Errorf("a 256 MiB keyring: %v, want the size limit named", err)
	}
	for _, path := range []string{"/dev/zero", filestest.FIFO(t, filepath.Join(t.TempDir(), "fifo.keys"))} {
		filestest.Refused(t, path+" as a keyring", func() error { _, err := ParseKeyring(path); return err }, "not a regular file")
	}
}

// A coordinate within the bounds can still be a lie: every part at the
// bound, the largest height, and an error of 0, which gives it the whole
// weight of the update. Acked a few times, it must not push our own
// coordinate past what peers take, or every peer would refuse our reports
// and acks with it, and show us stale.
func TestBoundedLyingCoordinateKeepsOursAcceptable(t *testing.T) {
	cfg := coordinate.DefaultConfig()
	cfg.Dimensionality = coordDims
	liar := coordinate.NewCoordinate(cfg)
	for i := range liar.Vec {
		liar.Vec[i] = maxCoordSeconds
	}
	liar.Height, liar.Error = maxCoordSeconds, 0
	if _, err := decodeCoord(encodeCoord(liar)); err != nil {
		t.Fatalf("the liar's coordinate is refused already: %v", err)
	}
	c := beatCluster()
	c.coords, _ = newCoordClient()
	d := &delegate{c}
	for i := range 10 {
		d.NotifyPingComplete(&memberlist.Node{Name: "liar"}, time.Millisecond, encodeCoord(liar))
		ours := c.coords.GetCoordinate()
		if _, err := decodeCoord(encodeCoord(ours)); err != nil {
			t.Fatalf("after %d acks of the liar, peers refuse our coordinate: %v", i+1, err)
		}
	}
}
