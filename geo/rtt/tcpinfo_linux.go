package rtt

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TCPRTT returns the kernel's smoothed RTT (TCP_INFO) of a TCP connection,
// looking through TLS and other wrappers that expose NetConn.
func TCPRTT(c net.Conn) (time.Duration, bool) {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	ctlErr := raw.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if ctlErr != nil || err != nil || info.Rtt == 0 {
		return 0, false
	}
	return time.Duration(info.Rtt) * time.Microsecond, true
}
