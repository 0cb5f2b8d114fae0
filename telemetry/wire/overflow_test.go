package wire

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"time"

	"perigee/telemetry"
)

// Circuit overflows travel with their samples, by service and reason, and
// a batch without any is byte for byte what it was before they existed.
func TestOverflowRoundTripAndOldPayloadsUnchanged(t *testing.T) {
	now := time.Now()
	in := sampleBatchAt(now)
	before := AppendPayload(nil, in)
	if strings.Contains(string(before), "max_requests") {
		t.Fatal("a batch without overflows mentions them")
	}
	api := in.Samples[0].Services["api"]
	api.Overflow = map[string]uint64{"max_requests": 24, "max_pending": 1 << 40}
	in.Samples[0].Services["api"] = api
	second := in.Samples[0]
	second.Time = now
	second.Services = map[string]telemetry.ServiceSample{"img": {RPS: 1, Overflow: map[string]uint64{"max_retries": 3}}, "api": {RPS: 2}}
	in.Samples = append(in.Samples, second)
	roundTrip(t, in)
	// The frame of a batch without overflows decodes as before.
	old := sampleBatchAt(now)
	dec := &Batch{Node: old.Node, Seq: old.Seq, Created: old.Created}
	if err := DecodePayload(before, dec, 1<<20); err != nil || dec.Samples[0].Services["api"].Overflow != nil {
		t.Fatalf("old payload: %v, overflow %v", err, dec.Samples[0].Services["api"].Overflow)
	}
}

// A forged overflow section is refused, never half-read: entries for a
// sample or service the batch does not hold, the same entry twice, zero
// counts, a section with no samples before it, or more entries than bytes.
func TestOverflowSectionRefusesForgeries(t *testing.T) {
	now := time.Now()
	base := sampleBatchAt(now)
	base.Decisions, base.Events, base.Access, base.Cost = nil, nil, nil, nil
	samples := AppendPayload(nil, base) // one sample: services api, img
	// Its string table holds node, region, api, img in that order.
	entry := func(sample uint64, svc, reason []byte, n uint64) []byte {
		b := binary.AppendUvarint(nil, sample)
		b = append(b, svc...)
		b = append(b, reason...)
		return binary.AppendUvarint(b, n)
	}
	ref := func(i uint64) []byte { return binary.AppendUvarint(nil, refFirst+i) }
	text := func(s string) []byte { return appendString([]byte{refText}, s) }
	section := func(entries ...[]byte) []byte {
		b := binary.AppendUvarint([]byte{tagOverflow}, uint64(len(entries)))
		for _, e := range entries {
			b = append(b, e...)
		}
		return b
	}
	cases := map[string][]byte{
		"no samples before it": section(entry(0, text("api"), text("max_requests"), 1)),
		"sample out of range":  append(slices.Clone(samples), section(entry(1, ref(2), text("max_requests"), 1))...),
		"unknown service":      append(slices.Clone(samples), section(entry(0, text("web"), text("max_requests"), 1))...),
		"zero count":           append(slices.Clone(samples), section(entry(0, ref(2), text("max_requests"), 0))...),
		"empty reason":         append(slices.Clone(samples), section(entry(0, ref(2), text(""), 1))...),
		"twice": append(slices.Clone(samples), section(
			entry(0, ref(2), text("max_requests"), 1), entry(0, ref(2), ref(4), 2))...),
		"count past the bytes": append(slices.Clone(samples), binary.AppendUvarint([]byte{tagOverflow}, MaxRecords)...),
	}
	for name, p := range cases {
		out := &Batch{Created: base.Created}
		if err := DecodePayload(p, out, 1<<20); err == nil {
			t.Errorf("%s: accepted: %+v", name, out.Samples)
		}
	}
	// The well-formed one of the same shape is accepted.
	ok := append(slices.Clone(samples), section(entry(0, ref(2), text("max_requests"), 5))...)
	out := &Batch{Created: base.Created}
	if err := DecodePayload(ok, out, 1<<20); err != nil || out.Samples[0].Services["api"].Overflow["max_requests"] != 5 {
		t.Fatalf("well-formed section: %v %+v", err, out.Samples)
	}
}
