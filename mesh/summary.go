package mesh

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"time"

	"perigee/binread"
)

// A region summary is what the rest of the fleet knows of a region: its
// merged load, and per member its health, its leader flag and its
// in-flight count, which is what steering needs beyond membership. One
// member per region sends it (its leader, or its lowest-id eligible member
// while it has none), gossiped fleet-wide; reports themselves go only to
// the region (docs/mesh.md).
type summary struct {
	Region, Sender string
	Gen            uint64 // the sender's report generation
	Seq            uint64 // the sender's summary sequence
	Age            time.Duration
	Term           uint64 // the highest leader term the sender knows in the region
	Capacity       int
	RPS            float64
	InFlight       int64
	CPU            float64
	Members        []summaryMember
}

// summaryMember is one live member of the region, as its summariser sees it.
type summaryMember struct {
	ID       string
	Fresh    bool // its report is fresh, so its figures are in the sums
	Leads    bool
	Leaving  bool
	InFlight int64
}

const (
	flagFresh       = 1 << 2 // in a summary member's flags, next to flagLeaving and flagLeads
	maxSummaryRegn  = 256    // members a summary may list
	maxSummaryBytes = 1100   // a summary's size, so it fits a gossip packet; a larger region lists its first ids
	minMemberBytes  = 3      // a one-letter id, flags, a one-byte in-flight count
)

// agePos is where the age sits in an encoded summary, full or compact,
// for broadcast.
func (s *summary) agePos() int {
	return 2 + uvarintLen(uint64(len(s.Region))) + len(s.Region) + uvarintLen(uint64(len(s.Sender))) + len(s.Sender) +
		uvarintLen(s.Gen) + uvarintLen(s.Seq)
}

func encodeSummary(s *summary) []byte {
	b := appendSummaryHead([]byte{kindSummary, formatVersion}, s)
	b = binary.AppendUvarint(b, uint64(len(s.Members)))
	for _, m := range s.Members {
		b = appendString(b, m.ID)
		b = appendMemberState(b, m)
	}
	return b
}

// A compact summary is a summary without its member ids: each member's
// flags and in-flight count by its position in the member list of a full
// summary the receiver holds, which it names by a digest of that list
// (memberList). A region's membership changes seldom and its load often,
// so most summaries go compact, at half the size for ten members; a
// receiver without the list asks the sender for its summary (a want).
func encodeCompactSummary(s *summary) []byte {
	b := appendSummaryHead([]byte{kindSumCompact, formatVersion}, s)
	b = binary.BigEndian.AppendUint32(b, memberList(s.Members))
	b = binary.AppendUvarint(b, uint64(len(s.Members)))
	for _, m := range s.Members {
		b = appendMemberState(b, m)
	}
	return b
}

// memberList is the digest of a summary's member ids in their order
// (FNV-1a), by which a compact summary names the list it refers to.
func memberList(ms []summaryMember) uint32 {
	h := fnv.New32a()
	for _, m := range ms {
		h.Write(append([]byte(m.ID), 0)) // ids hold no NUL (checkName)
	}
	return h.Sum32()
}

// appendSummaryHead is what full and compact summaries share: who sends
// which summary, its age (at agePos) and the region's sums.
func appendSummaryHead(b []byte, s *summary) []byte {
	b = appendString(b, s.Region)
	b = appendString(b, s.Sender)
	b = binary.AppendUvarint(b, s.Gen)
	b = binary.AppendUvarint(b, s.Seq)
	b = binary.BigEndian.AppendUint32(b, ageMillis(s.Age))
	b = binary.AppendUvarint(b, s.Term)
	b = binary.AppendUvarint(b, uint64(max(s.Capacity, 0)))
	b = appendF32(b, s.RPS)
	b = binary.AppendVarint(b, s.InFlight)
	return appendF32(b, s.CPU)
}

func appendMemberState(b []byte, m summaryMember) []byte {
	flags := byte(0)
	if m.Fresh {
		flags |= flagFresh
	}
	if m.Leads {
		flags |= flagLeads
	}
	if m.Leaving {
		flags |= flagLeaving
	}
	b = append(b, flags)
	return binary.AppendVarint(b, m.InFlight)
}

// decodeSummary parses a summary. It never panics on any input: fuzzed in
// FuzzDecodeSummary.
func decodeSummary(b []byte) (*summary, error) {
	if len(b) < 2 || b[0] != kindSummary || b[1] != formatVersion {
		return nil, fmt.Errorf("%w: not a summary", errMalformed)
	}
	r := binread.New(b[2:], errMalformed)
	s := readSummaryHead(r)
	n := r.Count(minMemberBytes, maxSummaryRegn, "members")
	s.Members = make([]summaryMember, 0, n)
	for range n {
		id := string(r.Bytes(maxNameLen, "member id"))
		m := readMemberState(r)
		m.ID = id
		if r.Err() == nil && checkName("id", m.ID) != nil {
			r.Fail("member id")
		}
		s.Members = append(s.Members, m)
	}
	return endSummary(r, s)
}

// decodeCompactSummary parses a compact summary: its members have no ids
// yet, and list is the digest of the member list they follow. It never
// panics on any input: fuzzed in FuzzDecodeSummary.
func decodeCompactSummary(b []byte) (s *summary, list uint32, err error) {
	if len(b) < 2 || b[0] != kindSumCompact || b[1] != formatVersion {
		return nil, 0, fmt.Errorf("%w: not a compact summary", errMalformed)
	}
	r := binread.New(b[2:], errMalformed)
	s = readSummaryHead(r)
	if l := r.Take(4, "member list"); l != nil {
		list = binary.BigEndian.Uint32(l)
	}
	n := r.Count(2, maxSummaryRegn, "members")
	s.Members = make([]summaryMember, 0, n)
	for range n {
		s.Members = append(s.Members, readMemberState(r))
	}
	s, err = endSummary(r, s)
	return s, list, err
}

func readSummaryHead(r *binread.Reader) *summary {
	s := &summary{Region: string(r.Bytes(maxNameLen, "region")), Sender: string(r.Bytes(maxNameLen, "sender"))}
	s.Gen = r.Uvarint("generation")
	s.Seq = r.Uvarint("sequence")
	if age := r.Take(4, "age"); age != nil {
		s.Age = time.Duration(binary.BigEndian.Uint32(age)) * time.Millisecond
	}
	s.Term = r.Uvarint("term")
	s.Capacity = atMost(r, MaxCapacity, "capacity")
	s.RPS = figure32(r, "rps")
	s.InFlight = count(r, maxCount*maxPeers, "in-flight")
	s.CPU = figure32(r, "cpu")
	return s
}

func readMemberState(r *binread.Reader) summaryMember {
	var m summaryMember
	f := r.Byte("member flags")
	if f&^(flagFresh|flagLeads|flagLeaving) != 0 {
		r.Fail("unknown member flags")
	}
	m.Fresh, m.Leads, m.Leaving = f&flagFresh != 0, f&flagLeads != 0, f&flagLeaving != 0
	m.InFlight = count(r, maxCount, "member in-flight")
	return m
}

func endSummary(r *binread.Reader, s *summary) (*summary, error) {
	r.End()
	if r.Err() == nil && (checkName("region", s.Region) != nil || checkName("id", s.Sender) != nil) {
		r.Fail("summary names")
	}
	if r.Err() != nil {
		return nil, r.Err()
	}
	return s, nil
}

// sumBeat says that summary Seq of a region carries the figures of its
// summary Base, as a beat does for a report.
type sumBeat struct {
	Region, Sender string
	Gen, Seq, Base uint64
	Age            time.Duration
}

// encodeSumBeat puts the age last, where broadcast patches it.
func encodeSumBeat(bt sumBeat) []byte {
	b := []byte{kindSumBeat, formatVersion}
	b = appendString(b, bt.Region)
	b = appendString(b, bt.Sender)
	return appendBeatTail(b, bt.Gen, bt.Seq, bt.Base, bt.Age)
}

// decodeSumBeat parses a summary beat. It never panics on any input:
// fuzzed in FuzzDecodeSummary.
func decodeSumBeat(b []byte) (sumBeat, error) {
	if len(b) < 2 || b[0] != kindSumBeat || b[1] != formatVersion {
		return sumBeat{}, fmt.Errorf("%w: not a summary beat", errMalformed)
	}
	r := binread.New(b[2:], errMalformed)
	bt := sumBeat{Region: string(r.Bytes(maxNameLen, "region")), Sender: string(r.Bytes(maxNameLen, "sender"))}
	bt.Gen, bt.Seq, bt.Base, bt.Age = readBeatTail(r)
	r.End()
	if r.Err() == nil && (checkName("region", bt.Region) != nil || checkName("id", bt.Sender) != nil) {
		r.Fail("summary beat names")
	}
	return bt, r.Err()
}

// A bundle carries whole messages, each with its own kind and version:
// push/pull state and repair answers. A receiver skips, and counts, the
// items it does not know, so a later release may add kinds to it.
func encodeBundle(items [][]byte) []byte {
	b := []byte{kindBundle, formatVersion}
	b = binary.AppendUvarint(b, uint64(len(items)))
	for _, it := range items {
		b = appendBytes(b, it)
	}
	return b
}

// maxItemBytes bounds one item of a bundle: a report or a summary;
// maxBundleItems, how many it holds.
const (
	maxItemBytes   = 16 << 10
	maxBundleItems = 2 * maxStateItems
)

// decodeBundle splits a bundle into its items. It never panics on any
// input: fuzzed in FuzzDecodeBundle.
func decodeBundle(b []byte) ([][]byte, error) {
	if len(b) < 2 || b[0] != kindBundle || b[1] != formatVersion {
		return nil, fmt.Errorf("%w: not a bundle", errMalformed)
	}
	r := binread.New(b[2:], errMalformed)
	n := r.Count(3, maxBundleItems, "items")
	items := make([][]byte, 0, n)
	for range n {
		it := r.Bytes(maxItemBytes, "item")
		if r.Err() == nil && (len(it) < 2 || it[0] == kindBundle) {
			r.Fail("item is no message, or a bundle")
		}
		items = append(items, it)
	}
	r.End()
	if r.Err() != nil {
		return nil, r.Err()
	}
	return items, nil
}

// A lease round: the leader asks its region to confirm it (leaseAsk), and
// each member that still follows it answers (leaseGrant) with the round's
// number; leader.go explains the lease.
type leaseMsg struct {
	From  string
	Term  uint64
	Round uint64
}

func encodeLease(kind byte, m leaseMsg) []byte {
	b := []byte{kind, formatVersion}
	b = appendString(b, m.From)
	b = binary.AppendUvarint(b, m.Term)
	return binary.AppendUvarint(b, m.Round)
}

// decodeLease parses a lease ask or grant. It never panics on any input:
// fuzzed in FuzzDecodeLease.
func decodeLease(kind byte, b []byte) (leaseMsg, error) {
	if len(b) < 2 || b[0] != kind || b[1] != formatVersion {
		return leaseMsg{}, fmt.Errorf("%w: not a lease message", errMalformed)
	}
	r := binread.New(b[2:], errMalformed)
	m := leaseMsg{From: string(r.Bytes(maxNameLen, "sender"))}
	m.Term = r.Uvarint("term")
	m.Round = r.Uvarint("round")
	r.End()
	if r.Err() == nil && checkName("id", m.From) != nil {
		r.Fail("lease sender")
	}
	return m, r.Err()
}
