package mesh

import (
	"time"

	"perigee/telemetry"
)

// WireMessages are one node's mesh messages as it sends them, before
// memberlist's framing. They come from the encoders the node uses, so a
// model of the protocol (bench/mesh/model) sends what the node sends, in
// size and, for memberlist's compression, in content.
type WireMessages struct {
	Report     []byte // a report of the sample, with a coordinate, as sent to the region
	Beat       []byte // an unchanged node's refresh
	Want       []byte // a repair's request
	Answer     []byte // a repair's answer: a bundle of the report
	Meta       []byte // the metadata memberlist carries in alive messages and push/pull
	LeaseAsk   []byte // a leader's lease round
	LeaseGrant []byte // a member's answer to it
}

// SampleMessages encodes the messages of meta's node, generation gen (its
// start time in Unix nanoseconds), a while after start (a sequence in the
// thousands, a term taken at its start), with s as its figures.
func SampleMessages(meta NodeMeta, gen uint64, s telemetry.NodeSample, extra map[string][]byte) (WireMessages, error) {
	coords, err := newCoordClient()
	if err != nil {
		return WireMessages{}, err
	}
	rep := &report{ID: meta.ID, Gen: gen, Seq: 5000, Age: time.Second, Term: gen / uint64(time.Second),
		Sample: s, Coord: coords.GetCoordinate(), Extra: extra}
	var w WireMessages
	if w.Report, err = encodeMessage(kindReport, []*report{rep}); err != nil {
		return WireMessages{}, err
	}
	w.Answer = encodeBundle([][]byte{w.Report})
	if w.Meta, err = meta.encode(gen); err != nil {
		return WireMessages{}, err
	}
	w.Beat = encodeBeat(beat{ID: meta.ID, Gen: gen, Seq: rep.Seq, Base: rep.Seq - 20, Age: time.Second})
	w.Want = encodeWant(meta.ID)
	w.LeaseAsk = encodeLease(kindLeaseAsk, leaseMsg{From: meta.ID, Term: rep.Term, Round: 5000})
	w.LeaseGrant = encodeLease(kindLeaseGrant, leaseMsg{From: meta.ID, Term: rep.Term, Round: 5000})
	return w, nil
}

// SampleSummary encodes the summary of region as sender (generation gen)
// sends it, a while after start, listing members (the sender first, as
// leader) each with inFlight requests: in full, compact (as it goes when
// the members are those of the summary before), and a summary beat of it.
func SampleSummary(region, sender string, gen uint64, members []string, inFlight int64) (sum, compact, beat []byte) {
	s := &summary{Region: region, Sender: sender, Gen: gen, Seq: 3000, Age: time.Second, Term: gen / uint64(time.Second),
		Capacity: 8 * len(members), RPS: 1000 * float64(len(members)), InFlight: inFlight * int64(len(members)), CPU: 0.5 * float64(len(members))}
	for i, id := range members {
		s.Members = append(s.Members, summaryMember{ID: id, Fresh: true, Leads: i == 0, InFlight: inFlight})
	}
	return encodeSummary(s), encodeCompactSummary(s), encodeSumBeat(sumBeat{Region: region, Sender: sender, Gen: gen, Seq: s.Seq + 1, Base: s.Seq, Age: time.Second})
}
