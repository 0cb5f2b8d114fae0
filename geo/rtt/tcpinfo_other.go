//go:build !linux

package rtt

import (
	"net"
	"time"
)

// TCPRTT is only implemented on Linux, where TCP_INFO carries the RTT.
func TCPRTT(net.Conn) (time.Duration, bool) { return 0, false }
