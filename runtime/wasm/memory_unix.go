//go:build unix

package wasm

import (
	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
)

// memoryAllocator backs each guest's linear memory with its own anonymous
// mapping of the memory's maximum size, outside the Go heap. wazero's own
// backing is a Go slice that memory.grow extends by append: one grow near
// a 64 MiB cap copied the whole memory (a hundred milliseconds on a busy
// machine, with no way to stop it), and every instance's memory weighed on
// the Go collector. Here a grow only extends the slice over pages the
// kernel supplies zeroed on first touch, untouched pages cost no RSS, and
// closing the module gives them all back at once.
var memoryAllocator experimental.MemoryAllocator = experimental.MemoryAllocatorFunc(func(_, max uint64) experimental.LinearMemory {
	if max == 0 {
		return &mappedMemory{}
	}
	b, err := unix.Mmap(-1, 0, int(max), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
	if err != nil {
		// Out of address space: a slice of the whole size, which the
		// Go runtime also maps lazily.
		return &mappedMemory{b: make([]byte, max), heap: true}
	}
	return &mappedMemory{b: b}
})

type mappedMemory struct {
	b    []byte
	heap bool
}

func (m *mappedMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.b)) {
		return nil
	}
	return m.b[:size]
}

func (m *mappedMemory) Free() {
	if m.b != nil && !m.heap {
		unix.Munmap(m.b)
	}
	m.b = nil
}
