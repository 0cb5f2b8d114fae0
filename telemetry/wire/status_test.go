package wire

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"perigee/telemetry"
)

// withStatus is sampleBatchAt with responses by class on its sample and
// on one of its services.
func withStatus(now time.Time) *Batch {
	b := sampleBatchAt(now)
	b.Samples[0].Status = telemetry.StatusClasses{0, 4000, 61, 3, 1 << 40}
	api := b.Samples[0].Services["api"]
	api.Status = telemetry.StatusClasses{0, 3990, 61, 0, 9}
	b.Samples[0].Services["api"] = api
	return b
}

// Responses by status class travel with their samples, the node's and each
// service's; a batch without any is byte for byte what it was before they
// existed, and the section sits between the samples and what follows them.
func TestStatusRoundTripAndOldPayloadsUnchanged(t *testing.T) {
	now := time.Now()
	in := withStatus(now)
	second := in.Samples[0]
	second.Time = now
	second.Status = telemetry.StatusClasses{7}
	second.Services = map[string]telemetry.ServiceSample{"img": {RPS: 1, Status: telemetry.StatusClasses{0, 0, 0, 0, 2}}, "api": {RPS: 2}}
	in.Samples = append(in.Samples, second)
	roundTrip(t, in)

	plain, classes := sampleBatchAt(now), withStatus(now)
	onlySamples := func(b *Batch) *Batch {
		return &Batch{Node: b.Node, Seq: b.Seq, Created: b.Created, Samples: b.Samples}
	}
	samplesPart := AppendPayload(nil, onlySamples(plain))
	withSection := AppendPayload(nil, onlySamples(classes))
	if !bytes.HasPrefix(withSection, samplesPart) || withSection[len(samplesPart)] != tagStatus {
		t.Fatal("the status section does not follow the samples' unchanged bytes")
	}
	section := withSection[len(samplesPart):]
	rest := AppendPayload(nil, plain)[len(samplesPart):]
	if got, want := AppendPayload(nil, classes), slices.Concat(samplesPart, section, rest); !bytes.Equal(got, want) {
		t.Fatal("a batch with status classes is not the batch without them plus their section")
	}
	dec := &Batch{Node: plain.Node, Seq: plain.Seq, Created: plain.Created}
	if err := DecodePayload(AppendPayload(nil, plain), dec, 1<<20); err != nil || dec.Samples[0].Status != (telemetry.StatusClasses{}) {
		t.Fatalf("old payload: %v, status %v", err, dec.Samples[0].Status)
	}
}

// A forged status section is refused, never half-read: entries for a
// sample or service the batch does not hold, a class outside 1xx..5xx, the
// same class twice, zero counts, a section with no samples before it, or
// more entries than bytes.
func TestStatusSectionRefusesForgeries(t *testing.T) {
	now := time.Now()
	base := sampleBatchAt(now)
	base.Decisions, base.Events, base.Access, base.Cost = nil, nil, nil, nil
	samples := AppendPayload(nil, base) // one sample: services api, img
	// Its string table holds node, region, api, img in that order.
	ref := func(i uint64) []byte { return binary.AppendUvarint(nil, refFirst+i) }
	text := func(s string) []byte { return appendString([]byte{refText}, s) }
	entry := func(sample uint64, svc []byte, class, n uint64) []byte {
		b := binary.AppendUvarint(nil, sample)
		b = append(b, svc...)
		b = binary.AppendUvarint(b, class)
		return binary.AppendUvarint(b, n)
	}
	section := func(nodes, services [][]byte) []byte {
		b := binary.AppendUvarint([]byte{tagStatus}, uint64(len(nodes)))
		b = append(b, slices.Concat(nodes...)...)
		b = binary.AppendUvarint(b, uint64(len(services)))
		return append(b, slices.Concat(services...)...)
	}
	after := func(s []byte) []byte { return append(slices.Clone(samples), s...) }
	node := func(sample, class, n uint64) [][]byte { return [][]byte{entry(sample, nil, class, n)} }
	cases := map[string][]byte{
		"no samples before it":          section(node(0, 2, 1), nil),
		"node sample out of range":      after(section(node(1, 2, 1), nil)),
		"service sample out of range":   after(section(nil, [][]byte{entry(1, ref(2), 2, 1)})),
		"unknown service":               after(section(nil, [][]byte{entry(0, text("web"), 2, 1)})),
		"class 0":                       after(section(node(0, 0, 1), nil)),
		"class 6xx":                     after(section(nil, [][]byte{entry(0, ref(2), 6, 1)})),
		"zero count":                    after(section(node(0, 3, 0), nil)),
		"node class twice":              after(section([][]byte{entry(0, nil, 3, 1), entry(0, nil, 3, 2)}, nil)),
		"service class twice":           after(section(nil, [][]byte{entry(0, ref(2), 3, 1), entry(0, ref(2), 3, 2)})),
		"node count past the bytes":     after(binary.AppendUvarint([]byte{tagStatus}, MaxRecords)),
		"service count past the bytes":  after(binary.AppendUvarint([]byte{tagStatus, 0}, MaxRecords)),
		"section without service count": after(binary.AppendUvarint([]byte{tagStatus}, 0)),
	}
	for name, p := range cases {
		out := &Batch{Created: base.Created}
		if err := DecodePayload(p, out, 1<<20); err == nil {
			t.Errorf("%s: accepted: %+v", name, out.Samples)
		}
	}
	// The well-formed one of the same shape is accepted.
	ok := after(section(node(0, 3, 5), [][]byte{entry(0, ref(2), 3, 4), entry(0, ref(3), 5, 1)}))
	out := &Batch{Created: base.Created}
	if err := DecodePayload(ok, out, 1<<20); err != nil {
		t.Fatal(err)
	}
	s := out.Samples[0]
	if s.Status != (telemetry.StatusClasses{0, 0, 5}) || s.Services["api"].Status != (telemetry.StatusClasses{0, 0, 4}) ||
		s.Services["img"].Status != (telemetry.StatusClasses{0, 0, 0, 0, 1}) {
		t.Fatalf("well-formed section: %+v", s)
	}
}

// Status classes land in arrays the samples already hold, so the largest
// section a sample of many services can carry allocates nothing beyond
// what the same batch costs without it.
func TestStatusSectionAllocatesNothing(t *testing.T) {
	s := telemetry.NodeSample{Services: map[string]telemetry.ServiceSample{}, Status: telemetry.StatusClasses{1, 2, 3, 4, 5}}
	for i := range maxServices {
		s.Services[string(binary.AppendUvarint(nil, uint64(i)))] = telemetry.ServiceSample{Status: telemetry.StatusClasses{1, 2, 3, 4, 5}}
	}
	full := AppendPayload(nil, &Batch{Samples: []telemetry.NodeSample{s}})
	bare := AppendPayload(nil, &Batch{Samples: []telemetry.NodeSample{clearStatus(s)}})
	if !bytes.HasPrefix(full, bare) {
		t.Fatal("the status section does not follow the samples' unchanged bytes")
	}
	var err error
	withSection := allocated(func() { err = DecodePayload(full, &Batch{}, 1<<30) })
	if err != nil {
		t.Fatal(err)
	}
	without := allocated(func() { err = DecodePayload(bare, &Batch{}, 1<<30) })
	t.Logf("%d services: %d bytes of status section, %d KiB decoded with it, %d KiB without", maxServices, len(full)-len(bare), withSection>>10, without>>10)
	if err != nil || withSection > without+4<<10 {
		t.Fatalf("the section allocated %d bytes (err %v)", withSection-without, err)
	}
}

func clearStatus(s telemetry.NodeSample) telemetry.NodeSample {
	out := s
	out.Status = telemetry.StatusClasses{}
	out.Services = map[string]telemetry.ServiceSample{}
	for name, v := range s.Services {
		v.Status = telemetry.StatusClasses{}
		out.Services[name] = v
	}
	return out
}
