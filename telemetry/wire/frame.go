// Package wire is the format a node's shipper sends and the aggregator reads:
// a small framed header that names the batch (node, sequence), followed by a
// compressed body holding the batch's records.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Frame layout, all integers as varints unless noted:
//
//	magic "PGTB" (4 bytes) | version (1 byte) | codec (1 byte) | dictionary (1 byte)
//	node (len + bytes) | seq | created (unix ms, zigzag) | raw length | body length
//	body | CRC-32C of everything before it (4 bytes, little endian)
//
// The header is readable without decompressing, so the aggregator can check
// the credential, the declared size and duplicates before spending CPU.
// Version 1 frames, still in the store, have no dictionary byte.
const (
	magic   = "PGTB"
	version = 2
	// MaxNodeName bounds the node name so a header stays small.
	MaxNodeName = 128
)

// Codec names how a frame's body is compressed.
type Codec byte

const (
	CodecNone Codec = 0
	CodecZstd Codec = 1
)

// Errors a frame may be refused with; the aggregator maps each to a status.
var (
	ErrMalformed = errors.New("wire: malformed frame")
	ErrChecksum  = errors.New("wire: frame checksum mismatch")
	ErrTooLarge  = errors.New("wire: decompressed size over the limit")
	// ErrUnknownDict is a frame compressed with a dictionary this binary
	// does not embed: a node newer than its aggregator.
	ErrUnknownDict = errors.New("wire: unknown compression dictionary (upgrade the aggregator before its nodes)")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame is a parsed but not yet decompressed batch.
type Frame struct {
	Node    string
	Seq     uint64
	Created time.Time
	Codec   Codec
	Dict    DictID // zstd dictionary the body was compressed with, 0 = none
	RawLen  uint64 // declared size of the decompressed body
	Body    []byte
}

// AppendFrame encodes f onto b.
func AppendFrame(b []byte, f Frame) []byte {
	start := len(b)
	b = append(b, magic...)
	b = append(b, version, byte(f.Codec), byte(f.Dict))
	b = appendString(b, f.Node)
	b = binary.AppendUvarint(b, f.Seq)
	b = binary.AppendVarint(b, f.Created.UnixMilli())
	b = binary.AppendUvarint(b, f.RawLen)
	b = binary.AppendUvarint(b, uint64(len(f.Body)))
	b = append(b, f.Body...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// ParseFrame checks a frame's structure and checksum and that its declared
// decompressed size is within maxRaw. It does not decompress. The returned
// Body aliases b.
func ParseFrame(b []byte, maxRaw int64) (Frame, error) {
	var f Frame
	if len(b) < len(magic)+2+4 || string(b[:len(magic)]) != magic {
		return f, fmt.Errorf("%w: bad magic or too short", ErrMalformed)
	}
	hdr := 6 // up to and including codec, or dictionary from version 2 on
	switch b[4] {
	case 1:
	case version:
		hdr = 7
	default:
		return f, fmt.Errorf("%w: unknown version %d", ErrMalformed, b[4])
	}
	end := len(b) - 4
	if crc32.Checksum(b[:end], castagnoli) != binary.LittleEndian.Uint32(b[end:]) {
		return f, ErrChecksum
	}
	if end < hdr {
		return f, fmt.Errorf("%w: too short", ErrMalformed)
	}
	f.Codec = Codec(b[5])
	if f.Codec != CodecNone && f.Codec != CodecZstd {
		return f, fmt.Errorf("%w: unknown codec %d", ErrMalformed, f.Codec)
	}
	if hdr == 7 {
		f.Dict = DictID(b[6])
	}
	if f.Dict != 0 && f.Codec != CodecZstd {
		return f, fmt.Errorf("%w: dictionary %d without zstd", ErrMalformed, f.Dict)
	}
	if _, ok := dictionaries[f.Dict]; !ok && f.Dict != 0 {
		return f, fmt.Errorf("%w: id %d, this binary knows up to %d", ErrUnknownDict, f.Dict, NewestDict)
	}
	r := newReader(b[hdr:end])
	f.Node = string(r.Bytes(MaxNodeName, "node"))
	f.Seq = r.Uvarint("seq")
	f.Created = time.UnixMilli(r.Varint("created"))
	f.RawLen = r.Uvarint("raw length")
	bodyLen := r.Uvarint("body length")
	if err := r.Err(); err != nil {
		return f, err
	}
	if f.Node == "" {
		return f, fmt.Errorf("%w: empty node name", ErrMalformed)
	}
	if bodyLen != uint64(r.Len()) {
		return f, fmt.Errorf("%w: body length %d, have %d", ErrMalformed, bodyLen, r.Len())
	}
	if maxRaw >= 0 && f.RawLen > uint64(maxRaw) {
		return f, fmt.Errorf("%w: declares %d bytes, limit %d", ErrTooLarge, f.RawLen, maxRaw)
	}
	f.Body = r.Rest()
	return f, nil
}
