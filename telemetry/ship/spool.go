package ship

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// spool is the bounded on-disk queue of batches not yet acknowledged. Every
// batch goes through it, so a batch survives both an unreachable aggregator
// and a restart of the node. One file per batch, named by its sequence
// number, written to a temporary name and renamed so a crash never leaves a
// half-written batch under a real name.
type spool struct {
	dir string
	max int64
	log *slog.Logger

	mu      sync.Mutex
	seqs    []uint64 // ascending
	sizes   map[uint64]int64
	total   int64
	dropped uint64
}

const (
	batchExt = ".batch"
	seqFile  = "next.seq"
)

func openSpool(dir string, max int64, log *slog.Logger) (*spool, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &spool{dir: dir, max: max, log: log, sizes: map[uint64]int64{}}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = os.Remove(filepath.Join(dir, name)) // a write the node crashed in
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, batchExt), 10, 64)
		if !strings.HasSuffix(name, batchExt) || err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		s.seqs = append(s.seqs, seq)
		s.sizes[seq] = info.Size()
		s.total += info.Size()
	}
	slices.Sort(s.seqs)
	return s, nil
}

func (s *spool) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, batchExt))
}

// put stores a batch, then drops the oldest batches while the spool is over
// its bound. The newest batch is always kept.
func (s *spool) put(seq uint64, frame []byte) error {
	if err := writeAtomic(s.path(seq), frame); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	// The sequence file lets numbering continue after a restart even when
	// the clock has stepped back.
	if err := writeAtomic(filepath.Join(s.dir, seqFile), strconv.AppendUint(nil, seq+1, 10)); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seqs = append(s.seqs, seq)
	s.sizes[seq] = int64(len(frame))
	s.total += int64(len(frame))
	for s.total > s.max && len(s.seqs) > 1 {
		old := s.seqs[0]
		s.log.Warn("telemetry spool full, dropping oldest batch", "seq", old, "spool_bytes", s.total, "max", s.max)
		s.removeLocked(old)
		s.dropped++
	}
	return nil
}

// nextSeq is where numbering resumes: past every spooled batch and past
// the persisted counter.
func (s *spool) nextSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next uint64
	if n := len(s.seqs); n > 0 {
		next = s.seqs[n-1] + 1
	}
	if b, err := os.ReadFile(filepath.Join(s.dir, seqFile)); err == nil {
		if v, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64); err == nil {
			next = max(next, v)
		}
	}
	return next
}

// oldest returns the oldest batch. A file that cannot be read is dropped,
// counted and skipped.
func (s *spool) oldest() (seq uint64, frame []byte, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.seqs) > 0 {
		seq = s.seqs[0]
		b, err := os.ReadFile(s.path(seq))
		if err == nil {
			return seq, b, true
		}
		s.log.Error("telemetry spool: unreadable batch dropped", "seq", seq, "err", err)
		s.removeLocked(seq)
		s.dropped++
	}
	return 0, nil, false
}

// drop removes a batch that will never be sent (corrupt or refused) and
// counts it.
func (s *spool) drop(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(seq)
	s.dropped++
}

// remove deletes an acknowledged batch.
func (s *spool) remove(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(seq)
}

func (s *spool) removeLocked(seq uint64) {
	i, found := slices.BinarySearch(s.seqs, seq)
	if !found {
		return
	}
	s.seqs = slices.Delete(s.seqs, i, i+1)
	s.total -= s.sizes[seq]
	delete(s.sizes, seq)
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("telemetry spool: remove", "seq", seq, "err", err)
	}
}

func (s *spool) usage() (batches int, bytes int64, dropped uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seqs), s.total, s.dropped
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
