package wire

import (
	"encoding/binary"
	"maps"
	"reflect"
	"slices"
	"testing"

	"perigee/telemetry"
)

// The row-by-row writers of the first payload format, kept to check that
// batches stored in it still decode.

func appendSample(b []byte, s *telemetry.NodeSample, base int64) []byte {
	b = appendString(b, s.Node)
	b = appendString(b, s.Region)
	b = appendTime(b, s.Time, base)
	b = binary.AppendVarint(b, int64(s.Window))
	b = appendFloat(b, s.RPS)
	b = binary.AppendVarint(b, s.InFlight)
	b = appendFloat(b, s.CPU)
	b = binary.AppendUvarint(b, s.MemBytes)
	b = binary.AppendUvarint(b, uint64(len(s.Services)))
	for _, name := range slices.Sorted(maps.Keys(s.Services)) {
		v := s.Services[name]
		b = appendString(b, name)
		b = appendFloat(b, v.RPS)
		b = appendFloat(b, v.ErrorRate)
		b = binary.AppendVarint(b, v.InFlight)
		b = binary.AppendVarint(b, v.Queued)
		b = v.Latency.AppendBinary(b)
		b = binary.AppendVarint(b, int64(v.Backends))
		b = binary.AppendVarint(b, int64(v.HealthyBackends))
	}
	return b
}

func appendAccess(b []byte, a *telemetry.AccessRecord, base int64) []byte {
	b = appendTime(b, a.Time, base)
	for _, s := range [...]string{a.Route, a.Service, a.Method, a.Path} {
		b = appendString(b, s)
	}
	b = binary.AppendVarint(b, int64(a.Status))
	b = appendString(b, a.Proto)
	b = binary.AppendVarint(b, int64(a.Duration))
	b = binary.AppendVarint(b, a.Bytes)
	return appendString(b, a.Client)
}

// A payload written row by row, as the aggregator's store may still hold
// it, decodes to the same batch as the columnar one.
func TestRowPayloadStillDecodes(t *testing.T) {
	in := sampleBatch()
	base := in.Created.UnixNano()
	p := append([]byte{tagSamples}, binary.AppendUvarint(nil, uint64(len(in.Samples)))...)
	for i := range in.Samples {
		p = appendSample(p, &in.Samples[i], base)
	}
	p = append(p, tagAccess)
	p = binary.AppendUvarint(p, uint64(len(in.Access)))
	for i := range in.Access {
		p = appendAccess(p, &in.Access[i], base)
	}
	out := &Batch{Node: in.Node, Seq: in.Seq, Created: in.Created}
	if err := DecodePayload(p, out, 1<<20); err != nil {
		t.Fatal(err)
	}
	in.Decisions, in.Events, in.Cost = nil, nil, nil
	normalize(in)
	normalize(out)
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("row payload differs\n in: %+v\nout: %+v", in, out)
	}
}
