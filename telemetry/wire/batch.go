package wire

import (
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"perigee/telemetry"
)

// Batch is what one frame carries: everything a node recorded since its
// previous batch, plus the shipper's own running cost.
type Batch struct {
	Node      string
	Seq       uint64
	Created   time.Time
	Samples   []telemetry.NodeSample
	Decisions []telemetry.Decision
	Events    []telemetry.Event
	Access    []telemetry.AccessRecord
	Cost      *Cost
}

// Cost is the shipper's cumulative cost, sent along so the node's telemetry
// overhead is itself a metric the aggregator can show.
type Cost struct {
	BytesSent      uint64        `json:"bytes_sent"`
	EncodeCPU      time.Duration `json:"encode_cpu"`
	DroppedBatches uint64        `json:"dropped_batches"`
	DroppedRecords uint64        `json:"dropped_records"`
	SpoolBytes     uint64        `json:"spool_bytes"`
}

// Records is the number of records in the batch.
func (b *Batch) Records() int {
	return len(b.Samples) + len(b.Decisions) + len(b.Events) + len(b.Access)
}

// Record sections, each written as tag, count, records. Unknown tags are
// refused so a newer node cannot be half-read by an older aggregator.
const (
	tagSamples   = 1
	tagDecisions = 2
	tagEvents    = 3
	tagAccess    = 4
	tagCost      = 5
)

// AppendPayload encodes the batch's records (not its id, which lives in the
// frame header) onto b. Timestamps are offsets from the batch's creation.
func AppendPayload(b []byte, bt *Batch) []byte {
	base := bt.Created.UnixNano()
	if len(bt.Samples) > 0 {
		b = append(b, tagSamples)
		b = binary.AppendUvarint(b, uint64(len(bt.Samples)))
		for i := range bt.Samples {
			b = appendSample(b, &bt.Samples[i], base)
		}
	}
	if len(bt.Decisions) > 0 {
		b = append(b, tagDecisions)
		b = binary.AppendUvarint(b, uint64(len(bt.Decisions)))
		for i := range bt.Decisions {
			b = appendDecision(b, &bt.Decisions[i], base)
		}
	}
	if len(bt.Events) > 0 {
		b = append(b, tagEvents)
		b = binary.AppendUvarint(b, uint64(len(bt.Events)))
		for i := range bt.Events {
			b = appendEvent(b, &bt.Events[i], base)
		}
	}
	if len(bt.Access) > 0 {
		b = append(b, tagAccess)
		b = binary.AppendUvarint(b, uint64(len(bt.Access)))
		for i := range bt.Access {
			b = appendAccess(b, &bt.Access[i], base)
		}
	}
	if c := bt.Cost; c != nil {
		b = append(b, tagCost)
		b = binary.AppendUvarint(b, c.BytesSent)
		b = binary.AppendUvarint(b, uint64(c.EncodeCPU))
		b = binary.AppendUvarint(b, c.DroppedBatches)
		b = binary.AppendUvarint(b, c.DroppedRecords)
		b = binary.AppendUvarint(b, c.SpoolBytes)
	}
	return b
}

// DecodePayload reads what AppendPayload wrote into bt, whose Created must
// already be set from the frame header.
func DecodePayload(p []byte, bt *Batch) error {
	base := bt.Created.UnixNano()
	r := reader{b: p}
	for len(r.b) > 0 && r.err == nil {
		tag := r.b[0]
		r.b = r.b[1:]
		if tag == tagCost {
			bt.Cost = &Cost{
				BytesSent: r.uvarint(), EncodeCPU: time.Duration(r.uvarint()),
				DroppedBatches: r.uvarint(), DroppedRecords: r.uvarint(), SpoolBytes: r.uvarint(),
			}
			continue
		}
		n := r.count()
		switch tag {
		case tagSamples:
			bt.Samples = make([]telemetry.NodeSample, n)
			for i := range bt.Samples {
				readSample(&r, &bt.Samples[i], base)
			}
		case tagDecisions:
			bt.Decisions = make([]telemetry.Decision, n)
			for i := range bt.Decisions {
				readDecision(&r, &bt.Decisions[i], base)
			}
		case tagEvents:
			bt.Events = make([]telemetry.Event, n)
			for i := range bt.Events {
				readEvent(&r, &bt.Events[i], base)
			}
		case tagAccess:
			bt.Access = make([]telemetry.AccessRecord, n)
			for i := range bt.Access {
				readAccess(&r, &bt.Access[i], base)
			}
		default:
			return fmt.Errorf("%w: unknown section %d", ErrMalformed, tag)
		}
	}
	return r.err
}

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
	for _, name := range sortedKeys(s.Services) {
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

func readSample(r *reader, s *telemetry.NodeSample, base int64) {
	s.Node = r.string()
	s.Region = r.string()
	s.Time = r.time(base)
	s.Window = time.Duration(r.varint())
	s.RPS = r.float()
	s.InFlight = r.varint()
	s.CPU = r.float()
	s.MemBytes = r.uvarint()
	n := r.count()
	if n == 0 {
		return
	}
	s.Services = make(map[string]telemetry.ServiceSample, n)
	for range n {
		name := r.string()
		var v telemetry.ServiceSample
		v.RPS = r.float()
		v.ErrorRate = r.float()
		v.InFlight = r.varint()
		v.Queued = r.varint()
		if r.err == nil {
			h, rest, err := telemetry.DecodeHistogram(r.b)
			if err != nil {
				r.fail("histogram: " + err.Error())
			}
			v.Latency, r.b = h, rest
		}
		v.Backends = int(r.varint())
		v.HealthyBackends = int(r.varint())
		s.Services[name] = v
	}
}

func appendDecision(b []byte, d *telemetry.Decision, base int64) []byte {
	b = appendTime(b, d.Time, base)
	for _, s := range [...]string{d.Node, d.Region, d.Policy, d.Action, d.Service, d.Target, d.Reason, d.Rejected} {
		b = appendString(b, s)
	}
	b = appendFloat(b, d.Value)
	b = appendBool(b, d.Applied)
	return appendBool(b, d.DryRun)
}

func readDecision(r *reader, d *telemetry.Decision, base int64) {
	d.Time = r.time(base)
	for _, p := range [...]*string{&d.Node, &d.Region, &d.Policy, &d.Action, &d.Service, &d.Target, &d.Reason, &d.Rejected} {
		*p = r.string()
	}
	d.Value = r.float()
	d.Applied = r.bool()
	d.DryRun = r.bool()
}

func appendEvent(b []byte, e *telemetry.Event, base int64) []byte {
	b = appendTime(b, e.Time, base)
	b = appendString(b, e.Node)
	b = appendString(b, e.Kind)
	b = binary.AppendUvarint(b, uint64(len(e.Fields)))
	for _, k := range sortedKeys(e.Fields) {
		b = appendString(b, k)
		b = appendString(b, e.Fields[k])
	}
	return b
}

func readEvent(r *reader, e *telemetry.Event, base int64) {
	e.Time = r.time(base)
	e.Node = r.string()
	e.Kind = r.string()
	n := r.count()
	if n == 0 {
		return
	}
	e.Fields = make(map[string]string, n)
	for range n {
		k := r.string()
		e.Fields[k] = r.string()
	}
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

func readAccess(r *reader, a *telemetry.AccessRecord, base int64) {
	a.Time = r.time(base)
	for _, p := range [...]*string{&a.Route, &a.Service, &a.Method, &a.Path} {
		*p = r.string()
	}
	a.Status = int(r.varint())
	a.Proto = r.string()
	a.Duration = time.Duration(r.varint())
	a.Bytes = r.varint()
	a.Client = r.string()
}

// sortedKeys gives maps a stable order, so equal batches encode to equal
// bytes and compress alike.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
