// Package logsink puts a bounded buffer and one writer goroutine between a
// log and where its lines go, so that a reader that stops reading (a full
// pipe, a hung log shipper, a paused pager) never blocks the code that
// logs. Past the bound, lines are dropped and counted; when there is room
// again, one line says how many were dropped, in its place in the order.
package logsink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Sink is an io.Writer for a log handler that writes each record in one
// call, as log/slog's handlers do: Write copies the record into the buffer
// and returns at once, and the records reach the writer whole and in order.
type Sink struct {
	w      io.Writer
	size   int
	notice func(dropped uint64) []byte

	mu       sync.Mutex
	buf      []byte        // records not yet handed to w
	lines    uint64        // records in buf
	inflight int           // bytes w is writing now
	queued   uint64        // bytes accepted, in all
	written  uint64        // bytes handed to w, in all
	missed   uint64        // dropped since the last notice
	closed   bool          // Close was called: Write drops
	progress chan struct{} // closed and renewed after each write to w

	dropped atomic.Uint64
	wake    chan struct{}
	stop    chan struct{}
}

// New writes to w through a buffer of size bytes. notice formats the line
// that reports how many lines were dropped (see Notice).
func New(w io.Writer, size int, notice func(dropped uint64) []byte) *Sink {
	s := &Sink{w: w, size: size, notice: notice, progress: make(chan struct{}), wake: make(chan struct{}, 1), stop: make(chan struct{})}
	go s.run()
	return s
}

// Notice formats the dropped-lines line with the handler the log uses, so
// that it reads like the lines around it.
func Notice(handler func(io.Writer) slog.Handler) func(uint64) []byte {
	return func(n uint64) []byte {
		var b lineBuffer
		slog.New(handler(&b)).Warn("log lines dropped: the log's reader was not keeping up", "dropped", n)
		return b
	}
}

type lineBuffer []byte

func (b *lineBuffer) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }

// Write queues one record, or drops it when the buffer is full; it never
// waits for the writer and never fails.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.buf)+s.inflight+len(p) > s.size {
		s.drop()
		return len(p), nil
	}
	if s.missed > 0 {
		note := s.notice(s.missed)
		if len(s.buf)+s.inflight+len(note)+len(p) > s.size {
			s.drop()
			return len(p), nil
		}
		s.buf, s.missed = append(s.buf, note...), 0
		s.queued += uint64(len(note))
	}
	s.buf = append(s.buf, p...)
	s.queued += uint64(len(p))
	s.lines++
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (s *Sink) drop() {
	s.missed++
	s.dropped.Add(1)
}

// Dropped is how many lines were dropped in all, for a counter.
func (s *Sink) Dropped() uint64 { return s.dropped.Load() }

func (s *Sink) run() {
	var spare []byte
	for {
		select {
		case <-s.wake:
		case <-s.stop:
			return
		}
		for {
			s.mu.Lock()
			batch, lines := s.buf, s.lines
			if len(batch) == 0 {
				s.mu.Unlock()
				break
			}
			s.buf, s.lines, s.inflight = spare[:0], 0, len(batch)
			s.mu.Unlock()
			_, err := s.w.Write(batch)
			s.mu.Lock()
			s.inflight = 0
			s.written += uint64(len(batch))
			if err != nil { // the lines are lost: say so when writing works again
				s.missed += lines
				s.dropped.Add(lines)
			}
			close(s.progress)
			s.progress = make(chan struct{})
			s.mu.Unlock()
			spare = batch
		}
	}
}

// Flush waits until the lines written before it have been handed to the
// writer, or ctx ends.
func (s *Sink) Flush(ctx context.Context) error {
	s.mu.Lock()
	target := s.queued
	s.mu.Unlock()
	for {
		s.mu.Lock()
		pending, progress := target-min(s.written, target), s.progress
		s.mu.Unlock()
		if pending == 0 {
			return nil
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("log: %d bytes not written: %w", pending, context.Cause(ctx))
		}
	}
}

// Close flushes within ctx and stops the writer goroutine once it is free;
// later lines are dropped. A writer stuck on a dead pipe is left behind,
// never waited for past ctx.
func (s *Sink) Close(ctx context.Context) error {
	err := s.Flush(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	return err
}
