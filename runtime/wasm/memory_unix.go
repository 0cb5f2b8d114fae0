//go:build unix

package wasm

import (
	"fmt"

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
//
// Short of address space for the maximum (RLIMIT_AS, vm.max_map_count),
// only what the memory starts with is mapped, and memory.grow past it
// fails for the guest. (A Go slice of the maximum instead ran the node out
// of memory, which is fatal: TestGuestMemoryShortOfAddressSpace.) Short
// even of that, the instantiation fails: see mapFailure.
var memoryAllocator experimental.MemoryAllocator = experimental.MemoryAllocatorFunc(func(capacity, max uint64) experimental.LinearMemory {
	if max == 0 {
		return &mappedMemory{}
	}
	b, err := mapAnon(max)
	if err != nil && capacity < max {
		b, err = mapAnon(capacity)
	}
	if err != nil {
		// wazero has no way for an allocator to fail; instantiate
		// recovers this.
		panic(mapFailure{fmt.Errorf("map %d bytes of guest memory: %w", capacity, err)})
	}
	return &mappedMemory{b: b}
})

func mapAnon(size uint64) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	return unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
}

type mappedMemory struct{ b []byte }

func (m *mappedMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.b)) {
		return nil
	}
	return m.b[:size]
}

func (m *mappedMemory) Free() {
	if m.b != nil {
		unix.Munmap(m.b)
	}
	m.b = nil
}
