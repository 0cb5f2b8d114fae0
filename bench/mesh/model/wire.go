package model

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
