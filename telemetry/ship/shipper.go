package ship

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"perigee/telemetry"
	"perigee/telemetry/wire"
)

// Shipper sends a node's telemetry to the aggregator.
type Shipper struct {
	cfg    Config
	log    *slog.Logger
	spool  *spool
	up     *uplink
	sealer *wire.Sealer
	seq    uint64        // next sequence number; used only by the Run goroutine
	last   time.Time     // the previous batch's time; Run goroutine only
	offset time.Duration // the clock offset batch times were last corrected by; Run goroutine only

	mu      sync.Mutex
	pending wire.Batch
	acked   Records

	kick chan struct{} // a full batch is waiting
	wake chan struct{} // the spool has something new

	bytesSent      atomic.Uint64
	batchesAcked   atomic.Uint64
	batchesRefused atomic.Uint64
	droppedRecords atomic.Uint64
	encodeCPU      atomic.Int64
}

// Stats is the shipper's own cost and state; the node exports it as
// metrics, and every batch carries it to the aggregator too.
type Stats struct {
	BytesSent    uint64 // frame bytes posted, retries included
	BatchesAcked uint64 // acknowledged by the aggregator
	// RecordsAcked counts the records of acknowledged batches that this
	// process cut; batches left spooled by an earlier run count in
	// BatchesAcked only.
	RecordsAcked   Records
	BatchesRefused uint64        // refused for good (bad batch), dropped
	SpooledBatches int           // waiting on disk, in flight included
	SpoolBytes     int64         // disk usage of the spool directory
	DroppedBatches uint64        // evicted from a full spool, unreadable or refused
	DroppedRecords uint64        // refused because the in-memory buffer was full
	EncodeCPU      time.Duration // CPU time spent encoding and compressing
	LastProto      string        // protocol of the last answer: HTTP/3.0, HTTP/2.0...
	PendingRecords int           // recorded, not yet in a batch
	// ClockOffset is how far ahead of the aggregator this node's clock
	// runs (negative: behind), as learned from its answers; batch times
	// are corrected by it before they are sealed.
	ClockOffset time.Duration
}

// Records counts records by kind.
type Records struct {
	Samples   uint64 `json:"samples"`
	Decisions uint64 `json:"decisions"`
	Events    uint64 `json:"events"`
	Access    uint64 `json:"access"`
}

func (r *Records) add(o Records) {
	r.Samples += o.Samples
	r.Decisions += o.Decisions
	r.Events += o.Events
	r.Access += o.Access
}

func recordsOf(b *wire.Batch) Records {
	return Records{Samples: uint64(len(b.Samples)), Decisions: uint64(len(b.Decisions)), Events: uint64(len(b.Events)), Access: uint64(len(b.Access))}
}

// New validates cfg, reads the token and opens the spool; nothing is sent
// until Run.
func New(cfg Config, log *slog.Logger) (*Shipper, error) {
	token, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	tlsConf, err := tlsConfig(cfg.CAFile, cfg.InsecureSkipVerify)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	sp, err := openSpool(cfg.Spool.Dir, int64(cfg.Spool.Max), log)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	sealer, err := wire.NewSealer(wire.CodecZstd, wire.DefaultLevel)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	// Sequence numbers start at the clock in microseconds, so they keep
	// growing across restarts even if the spool directory was wiped; the
	// spool's own counter covers a clock that stepped back.
	seq := max(sp.nextSeq(), uint64(time.Now().UnixMicro()))
	return &Shipper{
		cfg: cfg, log: log.With("component", "telemetry"), spool: sp,
		up: newUplink(append([]string{cfg.Aggregator}, cfg.Failover...), token, tlsConf, cfg.Clock), sealer: sealer, seq: seq,
		kick: make(chan struct{}, 1), wake: make(chan struct{}, 1),
	}, nil
}

// add appends records under the lock unless the buffer is full; it never
// blocks on anything but that short lock.
func (s *Shipper) add(put func(b *wire.Batch)) {
	s.mu.Lock()
	n := s.pending.Records()
	if n >= s.cfg.MaxPending {
		s.mu.Unlock()
		s.droppedRecords.Add(1)
		return
	}
	put(&s.pending)
	s.mu.Unlock()
	if n+1 == batchRecords {
		signal(s.kick)
	}
}

// AddSample queues one node sample.
func (s *Shipper) AddSample(v telemetry.NodeSample) {
	s.add(func(b *wire.Batch) { b.Samples = append(b.Samples, v) })
}

// AddDecision queues one policy decision.
func (s *Shipper) AddDecision(v telemetry.Decision) {
	s.add(func(b *wire.Batch) { b.Decisions = append(b.Decisions, v) })
}

// AddEvent queues one membership or lifecycle event.
func (s *Shipper) AddEvent(v telemetry.Event) {
	s.add(func(b *wire.Batch) { b.Events = append(b.Events, v) })
}

// AddAccess queues one sampled access-log record.
func (s *Shipper) AddAccess(v telemetry.AccessRecord) {
	s.add(func(b *wire.Batch) { b.Access = append(b.Access, v) })
}

// Run batches every interval (or sooner when a batch fills), spools each
// batch and sends the spool oldest first until ctx is done. It then cuts a
// last batch and sends what it can within a short grace period; anything
// left stays in the spool for the next start.
func (s *Shipper) Run(ctx context.Context) {
	sendCtx, stopSend := context.WithCancel(ctx)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		s.up.probe(sendCtx)
		s.sendLoop(sendCtx)
	}()
	tick := time.NewTicker(s.cfg.Interval.D())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			stopSend()
			<-sent
			s.cut()
			grace, cancel := context.WithTimeout(context.Background(), min(s.cfg.Interval.D(), 5*time.Second))
			s.drain(grace)
			cancel()
			s.up.close()
			return
		case <-tick.C:
			s.cut()
		case <-s.kick:
			s.cut()
		}
	}
}

// cut seals the pending records into a batch and spools it.
func (s *Shipper) cut() {
	s.mu.Lock()
	b := s.pending
	s.pending = wire.Batch{}
	s.mu.Unlock()
	if b.Records() == 0 {
		return
	}
	s.correctClock(&b)
	s.spoolBatch(b)
}

// maxBatchPayload bounds a batch's payload, a quarter of the aggregator's
// default max_decompressed: with the records' decoded size on top (at
// most MaxPending of them, each charged to the same budget) a batch still
// decodes within it. A larger one the aggregator refuses for good.
const maxBatchPayload = 4 << 20

// spoolBatch seals b and spools it, as two halves, each the same way,
// while its payload is over maxBatchPayload; a single record goes as it is.
func (s *Shipper) spoolBatch(b wire.Batch) {
	b.Node, b.Seq, b.Created = s.cfg.Node, s.seq, batchTime(s.last, s.cfg.Clock().Add(-s.offset))
	st := s.Stats()
	b.Cost = &wire.Cost{BytesSent: st.BytesSent, EncodeCPU: st.EncodeCPU, DroppedBatches: st.DroppedBatches,
		DroppedRecords: st.DroppedRecords, SpoolBytes: uint64(st.SpoolBytes)}
	limit := maxBatchPayload
	if b.Records() == 1 {
		limit = -1
	}
	var frame []byte
	s.encodeCPU.Add(int64(threadCPU(func() { frame = s.sealer.SealWithin(&b, limit) })))
	if frame == nil {
		first, second := halve(b)
		s.spoolBatch(first)
		s.spoolBatch(second)
		return
	}
	s.last = b.Created
	if err := s.spool.put(b.Seq, frame, recordsOf(&b)); err != nil {
		// The disk refused it; the batch is lost, and said so.
		s.log.Error("telemetry batch lost", "seq", b.Seq, "records", b.Records(), "err", err)
		s.droppedRecords.Add(uint64(b.Records()))
		return
	}
	s.seq++
	signal(s.wake)
}

// halve splits b's records in two, in order, the first half to the first.
func halve(b wire.Batch) (first, second wire.Batch) {
	n := b.Records() / 2
	first.Samples, second.Samples = split(b.Samples, &n)
	first.Decisions, second.Decisions = split(b.Decisions, &n)
	first.Events, second.Events = split(b.Events, &n)
	first.Access, second.Access = split(b.Access, &n)
	return first, second
}

// split gives up to *n of all to the first part, and takes them off *n.
func split[T any](all []T, n *int) (first, rest []T) {
	k := min(*n, len(all))
	*n -= k
	return all[:k:k], all[k:]
}

// correctClock moves every time in b back by the node clock's offset from
// the aggregator, as last learned. Doing it here, before the batch is
// sealed, fixes its content: every aggregator that receives it stores the
// same times, which is what makes a doubly delivered batch a no-op in the
// engine. (An aggregator re-stamps a batch still too far ahead, but by its
// own arrival time, so two would differ.)
func (s *Shipper) correctClock(b *wire.Batch) {
	off := s.up.clockOffset()
	if off != s.offset {
		s.log.Info("node clock offset from the aggregator, correcting batch times", "offset", off, "was", s.offset)
		s.last = s.last.Add(s.offset - off) // the previous batch's time, on the new scale
		s.offset = off
	}
	if off == 0 {
		return
	}
	fix := func(t *time.Time) {
		if !t.IsZero() {
			*t = t.Add(-off)
		}
	}
	b.RecordTimes(fix)
}

// batchTime is a batch's creation time: now, but at least a millisecond
// (the wire's resolution) after the previous batch's. Exported series are
// stamped with it, and the engine keeps one sample per series per
// millisecond, so two batches cut in the same millisecond would have one
// of their counts merged away.
func batchTime(prev, now time.Time) time.Time {
	if next := prev.Truncate(time.Millisecond).Add(time.Millisecond); now.Before(next) {
		return next
	}
	return now
}

// backoffMin starts the resend backoff, which doubles up to RetryMax with
// full jitter, so a fleet coming back after an aggregator outage does not
// resend in lockstep. An answer's Retry-After waits longer, never past
// RetryMax: a hostile or mistaken value cannot hold the spool for longer.
const backoffMin = 250 * time.Millisecond

func (s *Shipper) sendLoop(ctx context.Context) {
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		if ok, after := s.sendOldest(ctx); !ok {
			backoff = min(max(2*backoff, backoffMin), s.cfg.RetryMax)
			wait(ctx, max(time.Duration(rand.Int64N(int64(backoff))+1), min(after, s.cfg.RetryMax)), nil)
			continue
		}
		backoff = 0
		if n, _, _ := s.spool.usage(); n == 0 {
			wait(ctx, 0, s.wake)
		}
	}
}

// sendOldest attempts the oldest spooled batch. It reports false when the
// batch must be retried later, with how long the answer asked to wait.
func (s *Shipper) sendOldest(ctx context.Context) (bool, time.Duration) {
	seq, frame, ok := s.spool.oldest()
	if !ok {
		return true, 0
	}
	out, after, err := s.up.send(ctx, frame)
	s.bytesSent.Add(uint64(len(frame)))
	switch out {
	case acked:
		r := s.spool.remove(seq)
		s.mu.Lock()
		s.acked.add(r)
		s.mu.Unlock()
		s.batchesAcked.Add(1)
		return true, 0
	case refused:
		s.log.Error("telemetry batch refused, dropped", "seq", seq, "err", err)
		s.spool.drop(seq)
		s.batchesRefused.Add(1)
		return true, 0
	}
	if ctx.Err() == nil {
		s.log.Warn("telemetry send failed, will retry", "seq", seq, "err", err, "retry_after", after)
	}
	return false, after
}

// drain sends spooled batches until one fails or the spool is empty.
func (s *Shipper) drain(ctx context.Context) {
	for ctx.Err() == nil {
		if n, _, _ := s.spool.usage(); n == 0 {
			return
		}
		if ok, _ := s.sendOldest(ctx); !ok {
			return
		}
	}
}

// Stats reads the shipper's counters.
func (s *Shipper) Stats() Stats {
	n, b, dropped := s.spool.usage()
	s.mu.Lock()
	pending, acked := s.pending.Records(), s.acked
	s.mu.Unlock()
	return Stats{
		BytesSent: s.bytesSent.Load(), BatchesAcked: s.batchesAcked.Load(), RecordsAcked: acked, BatchesRefused: s.batchesRefused.Load(),
		SpooledBatches: n, SpoolBytes: b, DroppedBatches: dropped, DroppedRecords: s.droppedRecords.Load(),
		EncodeCPU: time.Duration(s.encodeCPU.Load()), LastProto: s.up.proto.Load().(string),
		PendingRecords: pending, ClockOffset: s.up.clockOffset(),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// wait returns after d (if positive), when c fires, or when ctx is done.
func wait(ctx context.Context, d time.Duration, c <-chan struct{}) {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
	case <-timer:
	case <-c:
	}
}
