package model

import (
	"encoding/binary"
	"math"
	"time"
)

// Sizes of memberlist's own messages. memberlist encodes them with msgpack
// as maps keyed by field name, so a message costs its field names too.
// These follow its structs (net.go) field by field.

// pingSize is a ping: a type byte, a map of SeqNo, Node, SourceAddr (an
// IPv6-sized address), SourcePort and SourceNode.
func pingSize(name string) int {
	return 1 + 1 + (1 + 5 + 5) + (1 + 4 + 1 + len(name)) + (1 + 10 + 2 + 16) + (1 + 10 + 3) + (1 + 10 + 1 + len(name))
}

// ackSize is an ack: a type byte, a map of SeqNo and Payload, which is our
// Vivaldi coordinate (mesh's encodeCoord: a count and 11 float32s).
func ackSize() int {
	return 1 + 1 + (1 + 5 + 5) + (1 + 7 + 2 + 1 + 11*4)
}

// nodeStateSize is one member in a push/pull: Name, Addr, Port, Meta,
// Incarnation, State and Vsn.
func nodeStateSize(name string, meta int) int {
	return 1 + (1 + 4 + 1 + len(name)) + (1 + 4 + 2 + 16) + (1 + 4 + 3) + (1 + 4 + 2 + meta) + (1 + 11 + 5) + (1 + 5 + 1) + (1 + 3 + 1 + 6)
}

// The proposed messages, laid out with mesh's encodings (uvarints, float32
// figures, length-prefixed names), with figures of a running fleet's size.

// encodeSummary is a region summary: who sends it and under which
// generation, sequence, age and term; which roster it indexes; the
// region's merged load; then per member its place in the roster, a flags
// byte (fresh, leads, leaving) and its in-flight count, which is what
// steering needs beyond membership.
func encodeSummary(region, sender string, gen uint64, members int) []byte {
	b := []byte{5, 1} // kind, format version
	b = appendString(b, region)
	b = appendString(b, sender)
	b = header(b, gen)
	b = binary.AppendUvarint(b, 300)             // roster sequence
	b = binary.AppendUvarint(b, uint64(members)) // fresh members
	b = binary.AppendUvarint(b, 400)             // capacity
	b = appendF32(b, 12345.6)                    // requests/s
	b = binary.AppendVarint(b, 2500)             // in flight
	b = appendF32(b, 0.62)                       // cpu
	b = binary.AppendUvarint(b, uint64(members))
	for i := range members {
		b = binary.AppendUvarint(b, uint64(i))
		b = append(b, 1)
		b = binary.AppendUvarint(b, 250)
	}
	return b
}

// encodeSummaryBeat says that summary Seq of a region has the figures of
// summary Base, as a node's beat does for its report.
func encodeSummaryBeat(region, sender string, gen uint64) []byte {
	b := []byte{7, 1}
	b = appendString(b, region)
	b = appendString(b, sender)
	b = header(b, gen)
	return binary.AppendUvarint(b, 3) // base, back from Seq
}

// encodeCoords is a region's roster, which summaries index, with its
// members' Vivaldi coordinates, 8 dimensions plus error, adjustment and
// height, as float16: RTT estimates need milliseconds, not float32's
// precision.
func encodeCoords(region, sender string, gen uint64, members int) []byte {
	b := []byte{6, 1}
	b = appendString(b, region)
	b = appendString(b, sender)
	b = header(b, gen)
	b = binary.AppendUvarint(b, 300) // roster sequence
	b = binary.AppendUvarint(b, uint64(members))
	for range members {
		b = appendString(b, sender)
		for range 11 {
			b = binary.BigEndian.AppendUint16(b, 0x2a3b)
		}
	}
	return b
}

// header is generation, sequence, age and term, as in a report.
func header(b []byte, gen uint64) []byte {
	b = binary.AppendUvarint(b, gen)
	b = binary.AppendUvarint(b, 5000)
	b = binary.BigEndian.AppendUint32(b, 1000)
	return binary.AppendUvarint(b, gen/uint64(time.Second))
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendF32(b []byte, f float64) []byte {
	return binary.BigEndian.AppendUint32(b, math.Float32bits(float32(f)))
}
