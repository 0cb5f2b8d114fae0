package wire

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"perigee/telemetry"
)

func sampleBatch() *Batch { return sampleBatchAt(time.Now()) }

func sampleBatchAt(now time.Time) *Batch {
	var h telemetry.Histogram
	for i := range 200 {
		h.Observe(time.Duration(i) * 137 * time.Microsecond)
	}
	return &Batch{
		Node: "ams-1", Seq: 42, Created: now,
		Samples: []telemetry.NodeSample{{
			Node: "ams-1", Region: "eu-west", Time: now.Add(-time.Second), Window: 5 * time.Second,
			RPS: 812.5, InFlight: 12, CPU: 0.73, MemBytes: 91 << 20,
			Services: map[string]telemetry.ServiceSample{
				"api": {RPS: 800, ErrorRate: 0.01, InFlight: 11, Queued: 2, Latency: h.Snapshot(), Backends: 3, HealthyBackends: 2},
				"img": {RPS: 12.5},
			},
		}},
		Decisions: []telemetry.Decision{{Time: now, Node: "ams-1", Region: "eu-west", Policy: "p99", Action: "scale",
			Service: "api", Value: 4, Reason: "p99 over 250ms", Applied: true}},
		Events: []telemetry.Event{{Time: now.Add(-3 * time.Hour), Node: "ams-1", Kind: "member_join", Fields: map[string]string{"peer": "fra-2"}}},
		Access: []telemetry.AccessRecord{{Time: now, Route: "r", Service: "api", Method: "GET", Path: "/v1/x",
			Status: 200, Proto: "HTTP/3", Duration: 3 * time.Millisecond, Bytes: 1234, Client: "192.0.2.1"}},
		Cost: &Cost{BytesSent: 1 << 20, EncodeCPU: time.Second, DroppedBatches: 1, SpoolBytes: 99},
	}
}

func mustOpener(t testing.TB, limit int64) *Opener {
	t.Helper()
	o, err := NewOpener(limit)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestRoundTripCodecsAndDictionaries(t *testing.T) {
	for _, c := range []struct {
		codec Codec
		dict  DictID
	}{{CodecNone, 0}, {CodecZstd, 0}, {CodecZstd, NewestDict}} {
		s, err := NewSealerDict(c.codec, DefaultLevel, c.dict)
		if err != nil {
			t.Fatal(err)
		}
		in := sampleBatch()
		f, err := ParseFrame(s.Seal(in), 1<<20)
		if err != nil {
			t.Fatalf("%+v: parse: %v", c, err)
		}
		if f.Dict != c.dict {
			t.Fatalf("%+v: header names dictionary %d", c, f.Dict)
		}
		out, err := mustOpener(t, 1<<20).Open(f)
		if err != nil {
			t.Fatalf("%+v: open: %v", c, err)
		}
		normalize(in)
		normalize(out)
		if !reflect.DeepEqual(in, out) {
			t.Fatalf("%+v: round trip differs\n in: %+v\nout: %+v", c, in, out)
		}
	}
}

func TestSealerUsesNewestDictionary(t *testing.T) {
	s, err := NewSealer(CodecZstd, DefaultLevel)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseFrame(s.Seal(sampleBatch()), 1<<20)
	if err != nil || f.Dict != NewestDict {
		t.Fatalf("dictionary %d (%v), want %d", f.Dict, err, NewestDict)
	}
	if len(dictionaries[NewestDict]) == 0 || len(dictionaries[NewestDict]) > 32<<10 {
		t.Fatalf("embedded dictionary is %d bytes", len(dictionaries[NewestDict]))
	}
}

// A frame naming a dictionary this binary lacks (from a newer node) is
// refused from its header, never decoded with another dictionary.
func TestUnknownDictionaryRefused(t *testing.T) {
	s, _ := NewSealerDict(CodecZstd, DefaultLevel, NewestDict)
	f, err := ParseFrame(s.Seal(sampleBatch()), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	f.Dict = NewestDict + 1
	if _, err := ParseFrame(AppendFrame(nil, f), 1<<20); !errors.Is(err, ErrUnknownDict) {
		t.Fatalf("parse: got %v, want ErrUnknownDict", err)
	}
	if _, err := mustOpener(t, 1<<20).Open(f); !errors.Is(err, ErrUnknownDict) {
		t.Fatalf("open: got %v, want ErrUnknownDict", err)
	}
	// The same body under id 0 must not be read with the dictionary.
	f.Dict = 0
	if _, err := mustOpener(t, 1<<20).Open(f); !errors.Is(err, ErrMalformed) {
		t.Fatalf("dictionary body without its id: got %v, want ErrMalformed", err)
	}
	if _, err := NewSealerDict(CodecZstd, DefaultLevel, NewestDict+1); err == nil {
		t.Fatal("sealer accepted an unknown dictionary")
	}
}

// testdata/frame-v1.bin was written by the sealer before frames carried a
// dictionary id (version 1), from sampleBatchAt(2025-06-01 12:00 UTC); the
// store holds such frames.
func TestVersion1FrameStillDecodes(t *testing.T) {
	frame, err := os.ReadFile("testdata/frame-v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseFrame(frame, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if frame[4] != 1 || f.Codec != CodecZstd || f.Dict != 0 {
		t.Fatalf("version %d, codec %d, dictionary %d; want 1, zstd, 0", frame[4], f.Codec, f.Dict)
	}
	out, err := mustOpener(t, 1<<20).Open(f)
	if err != nil {
		t.Fatal(err)
	}
	in := sampleBatchAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	normalize(in)
	normalize(out)
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("version 1 frame differs\n in: %+v\nout: %+v", in, out)
	}
}

// normalize strips monotonic readings and locations, which the wire does
// not carry, so DeepEqual compares instants.
func normalize(b *Batch) {
	fix := func(t *time.Time) { *t = time.Unix(0, t.UnixNano()) }
	fix(&b.Created)
	b.RecordTimes(fix)
}

// roundTrip encodes in's payload, decodes it into a batch with in's head,
// and fails unless it gives in back.
func roundTrip(t *testing.T, in *Batch) {
	t.Helper()
	out := &Batch{Node: in.Node, Seq: in.Seq, Created: in.Created}
	if err := DecodePayload(AppendPayload(nil, in), out, 1<<20); err != nil {
		t.Fatal(err)
	}
	normalize(in)
	normalize(out)
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip differs\n in: %+v\nout: %+v", in, out)
	}
}

func TestParseFrameRefusesDamage(t *testing.T) {
	s, _ := NewSealer(CodecZstd, DefaultLevel)
	good := s.Seal(sampleBatch())
	flip := bytes.Clone(good)
	flip[len(flip)/2] ^= 0x40
	badMagic := bytes.Clone(good)
	badMagic[0] = 'X'
	cases := map[string]struct {
		in   []byte
		want error
	}{
		"empty":       {nil, ErrMalformed},
		"bad magic":   {badMagic, ErrMalformed},
		"bit flip":    {flip, ErrChecksum},
		"truncated":   {good[:len(good)-7], ErrChecksum},
		"only header": {good[:8], ErrMalformed},
	}
	for name, c := range cases {
		if _, err := ParseFrame(c.in, 1<<20); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
	if _, err := ParseFrame(good, 10); !errors.Is(err, ErrTooLarge) {
		t.Errorf("declared size over limit: got %v", err)
	}
}

// A frame whose header is honest about nothing: it declares a tiny body but
// the zstd stream inflates to far more than the limit, with and without the
// dictionary.
func TestOpenRefusesZipBomb(t *testing.T) {
	for _, dict := range []DictID{0, NewestDict} {
		opts := []zstd.EOption{}
		if dict != 0 {
			opts = append(opts, zstd.WithEncoderDict(dictionaries[dict]))
		}
		zw, err := zstd.NewWriter(nil, opts...)
		if err != nil {
			t.Fatal(err)
		}
		bomb := zw.EncodeAll(make([]byte, 64<<20), nil)
		if len(bomb) > 64<<10 {
			t.Fatalf("bomb did not compress: %d bytes", len(bomb))
		}
		frame := AppendFrame(nil, Frame{Node: "x", Seq: 1, Created: time.Now(), Codec: CodecZstd, Dict: dict, RawLen: 100, Body: bomb})
		f, err := ParseFrame(frame, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mustOpener(t, 1<<20).Open(f); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("zip bomb, dictionary %d: got %v, want ErrTooLarge", dict, err)
		}
	}
}

func TestOpenRefusesLyingLength(t *testing.T) {
	s, _ := NewSealer(CodecZstd, DefaultLevel)
	f, err := ParseFrame(s.Seal(sampleBatch()), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	f.RawLen--
	if _, err := mustOpener(t, 1<<20).Open(f); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed", err)
	}
}

func TestDecodePayloadRefusesGarbage(t *testing.T) {
	good := AppendPayload(nil, sampleBatch())
	for _, p := range [][]byte{{99}, {tagSamples, 200}, good[:len(good)/2], append(bytes.Clone(good), tagAccess)} {
		if err := DecodePayload(p, &Batch{}, 1<<20); !errors.Is(err, ErrMalformed) {
			t.Errorf("payload % x...: got %v, want ErrMalformed", p[:min(len(p), 8)], err)
		}
	}
}

// FuzzFrame feeds arbitrary bytes through everything the aggregator runs on
// a request body: it must refuse or accept, never panic or over-allocate.
func FuzzFrame(f *testing.F) {
	s, _ := NewSealer(CodecZstd, DefaultLevel)
	n, _ := NewSealer(CodecNone, DefaultLevel)
	f.Add(s.Seal(sampleBatch()))
	f.Add(n.Seal(sampleBatch()))
	f.Add([]byte("PGTB\x01\x01"))
	o := mustOpener(f, 1<<20)
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseFrame(b, o.Limit())
		if err != nil {
			return
		}
		_, _ = o.Open(fr)
		// Payload decoding must also survive bytes no checksum vouched for.
		_ = DecodePayload(b, &Batch{Created: time.Now()}, 1<<20)
	})
}

// A batch of several samples and access records exercises the columns:
// deltas of either sign, services that come and go between samples,
// repeated and new strings, addresses in both families, a zero time.
func TestColumnsRoundTrip(t *testing.T) {
	now := time.Now()
	var h telemetry.Histogram
	h.Observe(3 * time.Millisecond)
	h.Observe(40 * time.Second)
	in := &Batch{Node: "ams-1", Seq: 7, Created: now}
	for i, svcs := range [][]string{{"api", "img"}, {"api"}, {}, {"img", "auth"}} {
		s := telemetry.NodeSample{Node: "ams-1", Region: "eu-west", Time: now.Add(time.Duration(i-3) * time.Second),
			Window: time.Second, RPS: 100.25 * float64(i%2), InFlight: int64(5 - 3*i), CPU: 0.1 * float64(i), MemBytes: uint64(90-i) << 20}
		if i == 2 {
			s.Time = time.Time{}
		}
		for j, name := range svcs {
			if s.Services == nil {
				s.Services = map[string]telemetry.ServiceSample{}
			}
			s.Services[name] = telemetry.ServiceSample{RPS: float64(10 * j), ErrorRate: 0.5, InFlight: int64(i - j), Queued: 1,
				Latency: h.Snapshot(), Backends: 3, HealthyBackends: 3 - i}
		}
		in.Samples = append(in.Samples, s)
	}
	for i, client := range []string{"198.51.100.7", "198.51.100.9", "2001:db8::1", "::ffff:192.0.2.1", "not-an-ip", "198.51.100.7", "10.0.0.1:80"} {
		in.Access = append(in.Access, telemetry.AccessRecord{Time: now.Add(-time.Duration(i*i) * time.Millisecond), Route: "r", Service: "api",
			Method: "GET", Path: []string{"/a", "/b"}[i%2], Status: []int{200, 404, 503}[i%3], Proto: "HTTP/2.0",
			Duration: time.Duration(i) * time.Microsecond, Bytes: int64(1000 - i*300), Client: client})
	}
	roundTrip(t, in)
}
