package ship

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU runs fn pinned to one OS thread and returns the CPU time that
// thread spent, which is the shipper's true encoding cost rather than wall
// time inflated by whatever else the node is doing.
func threadCPU(fn func()) time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start, ok := threadClock()
	fn()
	end, ok2 := threadClock()
	if !ok || !ok2 || end < start {
		return 0
	}
	return end - start
}

func threadClock() (time.Duration, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}
