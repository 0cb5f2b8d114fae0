package wire

import (
	"errors"
	"fmt"
	"time"

	"github.com/klauspost/compress/zstd"
)

// DefaultLevel is the zstd level a shipper uses. SpeedDefault (zstd level 3)
// already reaches the size target on telemetry batches; the better levels
// cost several times the CPU on the node for a few percent fewer bytes
// (see bench/telemetry and docs/telemetry.md).
const DefaultLevel = zstd.SpeedDefault

// Sealer turns batches into frames. It is not safe for concurrent use.
type Sealer struct {
	codec Codec
	dict  DictID
	zw    *zstd.Encoder
	buf   []byte
}

// NewSealer returns a sealer compressing with zstd at level and the newest
// embedded dictionary, or storing bodies uncompressed when codec is
// CodecNone.
func NewSealer(codec Codec, level zstd.EncoderLevel) (*Sealer, error) {
	if codec != CodecZstd {
		return NewSealerDict(codec, level, 0)
	}
	return NewSealerDict(codec, level, NewestDict)
}

// NewSealerDict is NewSealer with a chosen dictionary, 0 for none. Each
// frame is compressed on its own, so any batch decodes without the others.
func NewSealerDict(codec Codec, level zstd.EncoderLevel, dict DictID) (*Sealer, error) {
	d, ok := dictionaries[dict]
	if dict != 0 && (!ok || codec != CodecZstd) {
		return nil, fmt.Errorf("wire: no dictionary %d for codec %d", dict, codec)
	}
	s := &Sealer{codec: codec, dict: dict}
	if codec == CodecZstd {
		opts := []zstd.EOption{zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1)}
		if dict != 0 {
			opts = append(opts, zstd.WithEncoderDict(d))
		}
		zw, err := zstd.NewWriter(nil, opts...)
		if err != nil {
			return nil, fmt.Errorf("wire: zstd encoder: %w", err)
		}
		s.zw = zw
	}
	return s, nil
}

// Seal encodes and compresses bt into a new frame. It rounds bt.Created to
// the millisecond the header carries, since record times are offsets from it.
func (s *Sealer) Seal(bt *Batch) []byte { return s.SealWithin(bt, -1) }

// SealWithin is Seal, unless bt's payload is over maxRaw bytes (when
// maxRaw is not negative): then it returns nil, having compressed nothing.
func (s *Sealer) SealWithin(bt *Batch, maxRaw int) []byte {
	bt.Created = time.UnixMilli(bt.Created.UnixMilli())
	s.buf = AppendPayload(s.buf[:0], bt)
	if maxRaw >= 0 && len(s.buf) > maxRaw {
		return nil
	}
	f := Frame{Node: bt.Node, Seq: bt.Seq, Created: bt.Created, Codec: s.codec, Dict: s.dict, RawLen: uint64(len(s.buf)), Body: s.buf}
	if s.codec == CodecZstd {
		f.Body = s.zw.EncodeAll(s.buf, make([]byte, 0, len(s.buf)/4+64))
	}
	return AppendFrame(nil, f)
}

// Opener decompresses and decodes frames under a hard size limit. It is
// safe for concurrent use.
type Opener struct {
	max int64
	zr  map[DictID]*zstd.Decoder // by dictionary, 0 = none
}

// NewOpener returns an opener that refuses any body that decompresses to
// more than maxRaw bytes. It reads frames with every embedded dictionary.
func NewOpener(maxRaw int64) (*Opener, error) {
	o := &Opener{max: maxRaw, zr: map[DictID]*zstd.Decoder{}}
	for id, d := range dictionaries {
		if err := o.addDecoder(id, zstd.WithDecoderDicts(d)); err != nil {
			return nil, err
		}
	}
	if err := o.addDecoder(0); err != nil {
		return nil, err
	}
	return o, nil
}

// addDecoder gives each dictionary a decoder holding only it, so a body
// can only be read with the dictionary its header names.
func (o *Opener) addDecoder(id DictID, opts ...zstd.DOption) error {
	opts = append(opts, zstd.WithDecoderMaxMemory(uint64(o.max)), zstd.WithDecoderConcurrency(0))
	zr, err := zstd.NewReader(nil, opts...)
	if err != nil {
		return fmt.Errorf("wire: zstd decoder for dictionary %d: %w", id, err)
	}
	o.zr[id] = zr
	return nil
}

// Limit is the decompressed size limit.
func (o *Opener) Limit() int64 { return o.max }

// Open decompresses f's body and decodes its records. The body must
// decompress to exactly the size the header declared: a frame that lies
// about it is refused rather than trusted. One Open holds at most twice the
// limit: the decompressed body, and as much again for its decoded records.
func (o *Opener) Open(f Frame) (*Batch, error) {
	if f.RawLen > uint64(o.max) {
		return nil, fmt.Errorf("%w: declares %d bytes, limit %d", ErrTooLarge, f.RawLen, o.max)
	}
	raw := f.Body
	if f.Codec == CodecZstd {
		zr, ok := o.zr[f.Dict]
		if !ok {
			return nil, fmt.Errorf("%w: id %d", ErrUnknownDict, f.Dict)
		}
		var err error
		raw, err = zr.DecodeAll(f.Body, make([]byte, 0, f.RawLen))
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
			return nil, fmt.Errorf("%w: %v", ErrTooLarge, err)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrMalformed, err)
		}
	}
	if uint64(len(raw)) != f.RawLen {
		return nil, fmt.Errorf("%w: body is %d bytes, header says %d", ErrMalformed, len(raw), f.RawLen)
	}
	bt := &Batch{Node: f.Node, Seq: f.Seq, Created: f.Created}
	if err := DecodePayload(raw, bt, o.max); err != nil {
		return nil, err
	}
	return bt, nil
}
