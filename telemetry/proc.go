package telemetry

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ProcessUsage is this process's cumulative CPU time and its resident memory,
// read from /proc. The CPU share over a window is the difference of two
// readings divided by the wall time between them.
type ProcessUsage struct {
	CPU      time.Duration
	RSSBytes uint64
}

// clockTick is USER_HZ, fixed at 100 on every Linux architecture Go supports.
const clockTick = 100

// ReadProcessUsage reads /proc/self/stat.
func ReadProcessUsage() (ProcessUsage, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return ProcessUsage{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (ProcessUsage, error) {
	// The command name in field 2 may hold spaces; the fields after it
	// start past its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ProcessUsage{}, fmt.Errorf("telemetry: unexpected /proc stat format")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): utime is field 14, stime 15, rss 24.
	if len(f) < 22 {
		return ProcessUsage{}, fmt.Errorf("telemetry: short /proc stat line")
	}
	num := func(k int) uint64 { v, _ := strconv.ParseUint(string(f[k]), 10, 64); return v }
	ticks := num(11) + num(12)
	return ProcessUsage{
		CPU:      time.Duration(ticks) * time.Second / clockTick,
		RSSBytes: num(21) * uint64(os.Getpagesize()),
	}, nil
}
