// Package memtest measures the heap for tests where a memory bound is the
// point. Heap figures, unlike RSS, do not count the race detector's shadow
// memory nor what earlier tests left to the process.
package memtest

import (
	"runtime"
	"sync/atomic"
	"time"
)

// LiveHeap is the heap in use after a full collection: the second GC
// frees what finalizers of the first let go.
func LiveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// PeakGrowthDuring is how far the heap peaked during f above the live heap
// before it, sampled every 5 ms.
func PeakGrowthDuring(f func()) int64 {
	before := LiveHeap()
	var peak atomic.Int64
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			peak.Store(max(peak.Load(), int64(m.HeapAlloc)))
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	f()
	close(stop)
	<-sampled
	return peak.Load() - before
}
