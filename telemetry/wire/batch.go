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
// Samples and access records were first written row by row (tagSamples,
// tagAccess); nodes now write them in columns (see columns.go), and the
// row sections are still read because the aggregator's store holds them.
const (
	tagSamples    = 1
	tagDecisions  = 2
	tagEvents     = 3
	tagAccess     = 4
	tagCost       = 5
	tagSampleCols = 6
	tagAccessCols = 7
)

// AppendPayload encodes the batch's records (not its id, which lives in the
// frame header) onto b. Timestamps are relative to the batch's creation.
func AppendPayload(b []byte, bt *Batch) []byte {
	base := bt.Created.UnixNano()
	e := encoder{b: b, strs: map[string]uint64{}}
	if len(bt.Samples) > 0 {
		e.b = append(e.b, tagSampleCols)
		e.samples(bt.Samples, base)
	}
	if len(bt.Decisions) > 0 {
		e.b = append(e.b, tagDecisions)
		e.b = binary.AppendUvarint(e.b, uint64(len(bt.Decisions)))
		for i := range bt.Decisions {
			e.b = appendDecision(e.b, &bt.Decisions[i], base)
		}
	}
	if len(bt.Events) > 0 {
		e.b = append(e.b, tagEvents)
		e.b = binary.AppendUvarint(e.b, uint64(len(bt.Events)))
		for i := range bt.Events {
			e.b = appendEvent(e.b, &bt.Events[i], base)
		}
	}
	if len(bt.Access) > 0 {
		e.b = append(e.b, tagAccessCols)
		e.access(bt.Access, base)
	}
	if c := bt.Cost; c != nil {
		e.b = append(e.b, tagCost)
		for _, v := range [...]uint64{c.BytesSent, uint64(c.EncodeCPU), c.DroppedBatches, c.DroppedRecords, c.SpoolBytes} {
			e.b = binary.AppendUvarint(e.b, v)
		}
	}
	return e.b
}

// DecodePayload reads what AppendPayload wrote into bt, whose Created must
// already be set from the frame header.
func DecodePayload(p []byte, bt *Batch) error {
	base := bt.Created.UnixNano()
	d := decoder{reader: reader{b: p}}
	r := &d.reader
	for len(r.b) > 0 && r.err == nil {
		tag := r.b[0]
		r.b = r.b[1:]
		switch tag {
		case tagCost:
			bt.Cost = &Cost{
				BytesSent: r.uvarint(), EncodeCPU: time.Duration(r.uvarint()),
				DroppedBatches: r.uvarint(), DroppedRecords: r.uvarint(), SpoolBytes: r.uvarint(),
			}
		case tagSampleCols:
			bt.Samples = d.samples(base)
		case tagAccessCols:
			bt.Access = d.access(base)
		case tagSamples:
			bt.Samples = readRows(r, base, readSample)
		case tagDecisions:
			bt.Decisions = readRows(r, base, readDecision)
		case tagEvents:
			bt.Events = readRows(r, base, readEvent)
		case tagAccess:
			bt.Access = readRows(r, base, readAccess)
		default:
			return fmt.Errorf("%w: unknown section %d", ErrMalformed, tag)
		}
	}
	return r.err
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

// readRows reads a counted section of row-by-row records.
func readRows[T any](r *reader, base int64, read func(*reader, *T, int64)) []T {
	rows := make([]T, r.count())
	for i := range rows {
		read(r, &rows[i], base)
	}
	return rows
}
