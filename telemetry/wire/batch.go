package wire

import (
	"encoding/binary"
	"maps"
	"slices"
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

// RecordTimes calls f with the time of every record in b (not b.Created),
// for the node and the aggregator to correct a clock the same way.
func (b *Batch) RecordTimes(f func(*time.Time)) {
	for i := range b.Samples {
		f(&b.Samples[i].Time)
	}
	for i := range b.Decisions {
		f(&b.Decisions[i].Time)
	}
	for i := range b.Events {
		f(&b.Events[i].Time)
	}
	for i := range b.Access {
		f(&b.Access[i].Time)
	}
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
	tagOverflow   = 8 // circuit overflows of the samples' services; only when there are some
	tagStatus     = 9 // responses by status class of the samples and their services; likewise
)

// AppendPayload encodes the batch's records (not its id, which lives in the
// frame header) onto b. Timestamps are relative to the batch's creation.
func AppendPayload(b []byte, bt *Batch) []byte {
	base := bt.Created.UnixNano()
	e := encoder{b: b, strs: map[string]uint64{}}
	if len(bt.Samples) > 0 {
		e.b = append(e.b, tagSampleCols)
		e.samples(bt.Samples, base)
		e.overflow(bt.Samples)
		e.status(bt.Samples)
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

// overflow writes the samples' circuit overflows as a section of its own
// after theirs, each as sample index, service, reason and count, so that a
// batch without any is what it was before overflows were shipped.
func (e *encoder) overflow(ss []telemetry.NodeSample) {
	n := 0
	for i := range ss {
		for _, v := range ss[i].Services {
			for _, c := range v.Overflow {
				if c > 0 {
					n++
				}
			}
		}
	}
	if n == 0 {
		return
	}
	e.b = append(e.b, tagOverflow)
	e.b = binary.AppendUvarint(e.b, uint64(n))
	for i := range ss {
		for _, name := range slices.Sorted(maps.Keys(ss[i].Services)) {
			of := ss[i].Services[name].Overflow
			for _, reason := range slices.Sorted(maps.Keys(of)) {
				if of[reason] == 0 {
					continue
				}
				e.b = binary.AppendUvarint(e.b, uint64(i))
				e.str(name)
				e.str(reason)
				e.b = binary.AppendUvarint(e.b, of[reason])
			}
		}
	}
}

// status writes the samples' responses by status class as a section of its
// own after theirs, so that a batch without any is what it was before they
// were shipped: first the nodes' counts, each as sample index, class (1 for
// 1xx ... 5 for 5xx) and count, then the services', each as sample index,
// service, class and count. Zero counts are not written.
func (e *encoder) status(ss []telemetry.NodeSample) {
	var nodes, services int
	for i := range ss {
		nodes += nonZero(ss[i].Status)
		for _, v := range ss[i].Services {
			services += nonZero(v.Status)
		}
	}
	if nodes+services == 0 {
		return
	}
	e.b = append(e.b, tagStatus)
	e.b = binary.AppendUvarint(e.b, uint64(nodes))
	for i := range ss {
		e.classes(i, ss[i].Status, nil)
	}
	e.b = binary.AppendUvarint(e.b, uint64(services))
	for i := range ss {
		for _, name := range slices.Sorted(maps.Keys(ss[i].Services)) {
			e.classes(i, ss[i].Services[name].Status, func() { e.str(name) })
		}
	}
}

// classes writes c's non-zero counts of sample i, each after name if any.
func (e *encoder) classes(i int, c telemetry.StatusClasses, name func()) {
	for class, n := range c {
		if n == 0 {
			continue
		}
		e.b = binary.AppendUvarint(e.b, uint64(i))
		if name != nil {
			name()
		}
		e.b = binary.AppendUvarint(e.b, uint64(class+1))
		e.b = binary.AppendUvarint(e.b, n)
	}
}

func nonZero(c telemetry.StatusClasses) int {
	n := 0
	for _, v := range c {
		if v != 0 {
			n++
		}
	}
	return n
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
