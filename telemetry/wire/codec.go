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
	zw    *zstd.Encoder
	buf   []byte
}

// NewSealer returns a sealer compressing with zstd at level, or storing
// bodies uncompressed when codec is CodecNone.
func NewSealer(codec Codec, level zstd.EncoderLevel) (*Sealer, error) {
	s := &Sealer{codec: codec}
	if codec == CodecZstd {
		zw, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("wire: zstd encoder: %w", err)
		}
		s.zw = zw
	}
	return s, nil
}

// Seal encodes and compresses bt into a new frame. It rounds bt.Created to
// the millisecond the header carries, since record times are offsets from it.
func (s *Sealer) Seal(bt *Batch) []byte {
	bt.Created = time.UnixMilli(bt.Created.UnixMilli())
	s.buf = AppendPayload(s.buf[:0], bt)
	f := Frame{Node: bt.Node, Seq: bt.Seq, Created: bt.Created, Codec: s.codec, RawLen: uint64(len(s.buf)), Body: s.buf}
	if s.codec == CodecZstd {
		f.Body = s.zw.EncodeAll(s.buf, make([]byte, 0, len(s.buf)/4+64))
	}
	return AppendFrame(nil, f)
}

// Opener decompresses and decodes frames under a hard size limit. It is
// safe for concurrent use.
type Opener struct {
	max int64
	zr  *zstd.Decoder
}

// NewOpener returns an opener that refuses any body that decompresses to
// more than maxRaw bytes.
func NewOpener(maxRaw int64) (*Opener, error) {
	zr, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(uint64(maxRaw)), zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, fmt.Errorf("wire: zstd decoder: %w", err)
	}
	return &Opener{max: maxRaw, zr: zr}, nil
}

// Limit is the decompressed size limit.
func (o *Opener) Limit() int64 { return o.max }

// Open decompresses f's body and decodes its records. The body must
// decompress to exactly the size the header declared: a frame that lies
// about it is refused rather than trusted.
func (o *Opener) Open(f Frame) (*Batch, error) {
	raw := f.Body
	if f.Codec == CodecZstd {
		var err error
		raw, err = o.zr.DecodeAll(f.Body, make([]byte, 0, f.RawLen))
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
	if err := DecodePayload(raw, bt); err != nil {
		return nil, err
	}
	return bt, nil
}
