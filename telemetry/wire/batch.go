package wire

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"perigee/binread"
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
	d := decoder{r: newReader(p)}
	r := d.r
	for r.Len() > 0 && r.Err() == nil {
		switch tag := r.Byte("section"); tag {
		case tagCost:
			bt.Cost = &Cost{
				BytesSent: r.Uvarint("bytes sent"), EncodeCPU: time.Duration(r.Uvarint("encode cpu")),
				DroppedBatches: r.Uvarint("dropped batches"), DroppedRecords: r.Uvarint("dropped records"),
				SpoolBytes: r.Uvarint("spool bytes"),
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
	return r.Err()
}

func readSample(r *binread.Reader, s *telemetry.NodeSample, base int64) {
	s.Node = readString(r, "node")
	s.Region = readString(r, "region")
	s.Time = readTime(r, base, "sample time")
	s.Window = time.Duration(r.Varint("window"))
	s.RPS = r.Float64("rps")
	s.InFlight = r.Varint("in flight")
	s.CPU = r.Float64("cpu")
	s.MemBytes = r.Uvarint("memory")
	n := r.Count(1, math.MaxInt, "services")
	if n == 0 {
		return
	}
	s.Services = make(map[string]telemetry.ServiceSample, n)
	for range n {
		name := readString(r, "service")
		var v telemetry.ServiceSample
		v.RPS = r.Float64("service rps")
		v.ErrorRate = r.Float64("error rate")
		v.InFlight = r.Varint("service in flight")
		v.Queued = r.Varint("queued")
		v.Latency = telemetry.ReadHistogram(r)
		v.Backends = int(r.Varint("backends"))
		v.HealthyBackends = int(r.Varint("healthy backends"))
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

func readDecision(r *binread.Reader, d *telemetry.Decision, base int64) {
	d.Time = readTime(r, base, "decision time")
	for _, p := range [...]*string{&d.Node, &d.Region, &d.Policy, &d.Action, &d.Service, &d.Target, &d.Reason, &d.Rejected} {
		*p = readString(r, "decision field")
	}
	d.Value = r.Float64("decision value")
	d.Applied = readBool(r, "applied")
	d.DryRun = readBool(r, "dry run")
}

func appendEvent(b []byte, e *telemetry.Event, base int64) []byte {
	b = appendTime(b, e.Time, base)
	b = appendString(b, e.Node)
	b = appendString(b, e.Kind)
	b = binary.AppendUvarint(b, uint64(len(e.Fields)))
	for _, k := range slices.Sorted(maps.Keys(e.Fields)) {
		b = appendString(b, k)
		b = appendString(b, e.Fields[k])
	}
	return b
}

func readEvent(r *binread.Reader, e *telemetry.Event, base int64) {
	e.Time = readTime(r, base, "event time")
	e.Node = readString(r, "event node")
	e.Kind = readString(r, "event kind")
	n := r.Count(1, math.MaxInt, "event fields")
	if n == 0 {
		return
	}
	e.Fields = make(map[string]string, n)
	for range n {
		k := readString(r, "event field")
		e.Fields[k] = readString(r, "event value")
	}
}

func readAccess(r *binread.Reader, a *telemetry.AccessRecord, base int64) {
	a.Time = readTime(r, base, "access time")
	for _, p := range [...]*string{&a.Route, &a.Service, &a.Method, &a.Path} {
		*p = readString(r, "access field")
	}
	a.Status = int(r.Varint("status"))
	a.Proto = readString(r, "proto")
	a.Duration = time.Duration(r.Varint("duration"))
	a.Bytes = r.Varint("bytes")
	a.Client = readString(r, "client")
}

// readRows reads a counted section of row-by-row records.
func readRows[T any](r *binread.Reader, base int64, read func(*binread.Reader, *T, int64)) []T {
	rows := make([]T, r.Count(1, math.MaxInt, "rows"))
	for i := range rows {
		read(r, &rows[i], base)
	}
	return rows
}
