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
	"syscall"

	"perigee/files"
)

// spool is the bounded on-disk queue of batches not yet acknowledged. Every
// batch goes through it, so a batch survives both an unreachable aggregator
// and a restart of the node. One file per batch, named by its sequence
// number, written to a temporary name, fsynced, renamed and the directory
// fsynced, so a crash or a power cut never leaves a half-written batch
// under a real name nor loses one that counted as spooled.
//
// The bound is on disk usage (allocated blocks, as du counts them), the
// sequence file included: a batch of 150 bytes takes a whole block.
type spool struct {
	dir string
	max int64
	log *slog.Logger

	mu        sync.Mutex
	seqs      []uint64           // ascending
	fileUsage map[uint64]int64   // disk usage of each batch file
	records   map[uint64]Records // what each batch cut by this process holds
	seqUsage  int64              // disk usage of the sequence file
	total     int64              // of all of them
	dropped   uint64
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
	s := &spool{dir: dir, max: max, log: log, fileUsage: map[uint64]int64{}, records: map[uint64]Records{}}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = os.Remove(filepath.Join(dir, name)) // a write the node crashed in
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		if name == seqFile {
			s.seqUsage = diskUsage(info)
			s.total += s.seqUsage
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, batchExt), 10, 64)
		if !strings.HasSuffix(name, batchExt) || err != nil {
			continue
		}
		s.seqs = append(s.seqs, seq)
		s.fileUsage[seq] = diskUsage(info)
		s.total += s.fileUsage[seq]
	}
	slices.Sort(s.seqs)
	return s, nil
}

func (s *spool) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, batchExt))
}

// put stores a batch durably, then drops the oldest batches while the
// spool is over its bound. The newest batch is always kept.
func (s *spool) put(seq uint64, frame []byte, r Records) error {
	if int64(len(frame)) > s.max {
		// oldest would refuse to read it back.
		return fmt.Errorf("spool: a batch of %d bytes is larger than the spool's bound of %d", len(frame), s.max)
	}
	info, err := files.WriteAtomic(s.path(seq), frame)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	used := diskUsage(info)
	// The sequence file lets numbering continue after a restart even when
	// the clock has stepped back.
	info, err = files.WriteAtomic(filepath.Join(s.dir, seqFile), strconv.AppendUint(nil, seq+1, 10))
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	seqUsed := diskUsage(info)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seqs = append(s.seqs, seq)
	s.fileUsage[seq] = used
	s.records[seq] = r
	s.total += used + seqUsed - s.seqUsage
	s.seqUsage = seqUsed
	for s.total > s.max && len(s.seqs) > 1 {
		old := s.seqs[0]
		s.log.Warn("telemetry spool full, dropping oldest batch", "seq", old, "spool_bytes", s.total, "max", s.max)
		s.removeLocked(old)
		s.dropped++
	}
	return nil
}

// maxSeqFile bounds the sequence file: a number of at most 20 digits.
const maxSeqFile = 64

// nextSeq is where numbering resumes: past every spooled batch and past
// the persisted counter. A counter that is unreadable counts as none,
// said so: the caller numbers from the clock too.
func (s *spool) nextSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next uint64
	if n := len(s.seqs); n > 0 {
		next = s.seqs[n-1] + 1
	}
	path := filepath.Join(s.dir, seqFile)
	b, err := files.ReadOwn(path, maxSeqFile)
	if errors.Is(err, os.ErrNotExist) {
		return next
	}
	if err == nil {
		var v uint64
		if v, err = strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64); err == nil {
			return max(next, v)
		}
		err = fmt.Errorf("%s: %w", path, err)
	}
	s.log.Error("telemetry spool: sequence file unreadable, numbering from the clock", "err", err)
	return next
}

// oldest returns the oldest batch. A file that cannot be read is dropped,
// counted and skipped.
func (s *spool) oldest() (seq uint64, frame []byte, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.seqs) > 0 {
		seq = s.seqs[0]
		b, err := files.ReadOwn(s.path(seq), s.max)
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

// remove deletes an acknowledged batch and returns what it held (zero for
// a batch spooled by an earlier run).
func (s *spool) remove(seq uint64) Records {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.records[seq]
	s.removeLocked(seq)
	return r
}

func (s *spool) removeLocked(seq uint64) {
	i, found := slices.BinarySearch(s.seqs, seq)
	if !found {
		return
	}
	s.seqs = slices.Delete(s.seqs, i, i+1)
	s.total -= s.fileUsage[seq]
	delete(s.fileUsage, seq)
	delete(s.records, seq)
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("telemetry spool: remove", "seq", seq, "err", err)
	}
}

func (s *spool) usage() (batches int, bytes int64, dropped uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seqs), s.total, s.dropped
}

// diskUsage is the space a file takes: its allocated blocks, or its size
// rounded up to a 4 KiB block where the platform does not say.
func diskUsage(info os.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	const block = 4 << 10
	return (info.Size() + block - 1) / block * block
}
