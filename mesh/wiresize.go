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
	Report []byte // a gossiped report of the sample, with a coordinate
	Beat   []byte // an unchanged node's refresh
	Want   []byte // a repair's request
	Answer []byte // a repair's answer: the report as a state of one
	Meta   []byte // the metadata memberlist carries in alive messages and push/pull
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
	if w.Answer, err = encodeMessage(kindState, []*report{rep}); err != nil {
		return WireMessages{}, err
	}
	if w.Meta, err = meta.encode(gen); err != nil {
		return WireMessages{}, err
	}
	w.Beat = encodeBeat(beat{ID: meta.ID, Gen: gen, Seq: rep.Seq, Base: rep.Seq - 20, Age: time.Second})
	w.Want = encodeWant(meta.ID)
	return w, nil
}
