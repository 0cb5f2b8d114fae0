// Package dnstest runs Debian's real dnsmasq on a loopback port for tests
// of DNS discovery: local records only, nothing forwarded.
package dnstest

import (
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"
)

// Path is where dnsmasq-base installs the server.
const Path = "/usr/sbin/dnsmasq"

// Server is a dnsmasq child answering for Domain on Addr.
type Server struct {
	Addr string // 127.0.0.1:port
	t    *testing.T
	cmd  *exec.Cmd
}

// Domain is the zone the server answers for; other names in it are
// NXDOMAIN.
const Domain = "example.internal"

// SRV is one SRV record, with the target's address.
type SRV struct {
	Name     string // e.g. _api._tcp.example.internal
	Target   string // a host in Domain; empty: the service is not available (target ".")
	Port     int
	Priority int
	Weight   int
}

// Host is one A or AAAA record, or with TXT set and no IP, a name that
// exists with a TXT record alone.
type Host struct{ Name, IP, TXT string }

// Start runs dnsmasq with the records on a free loopback port; the test
// skips when dnsmasq is not installed (.ci/run installs dnsmasq-base).
func Start(t *testing.T, srvs []SRV, hosts []Host) *Server {
	t.Helper()
	if _, err := exec.LookPath(Path); err != nil {
		t.Skip("dnsmasq not installed (apt-get install dnsmasq-base)")
	}
	s := &Server{t: t, Addr: freePort(t)}
	s.Restart(srvs, hosts)
	t.Cleanup(s.Stop)
	return s
}

// Restart replaces the records: the server stops and starts again on the
// same address with the new set.
func (s *Server) Restart(srvs []SRV, hosts []Host) {
	s.t.Helper()
	s.Stop()
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{
		"--no-daemon", "--port=" + port, "--listen-address=127.0.0.1", "--bind-interfaces",
		"--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=", "--user=",
		"--local=/" + Domain + "/", "--local-ttl=1",
	}
	for _, r := range srvs {
		if r.Target == "" { // "no such service here": an SRV record with target "."
			args = append(args, "--srv-host="+r.Name)
			continue
		}
		args = append(args, fmt.Sprintf("--srv-host=%s,%s,%d,%d,%d", r.Name, r.Target, r.Port, r.Priority, r.Weight))
	}
	for _, h := range hosts {
		if h.TXT != "" {
			args = append(args, fmt.Sprintf("--txt-record=%s,%s", h.Name, h.TXT))
		}
		if h.IP != "" {
			args = append(args, fmt.Sprintf("--host-record=%s,%s", h.Name, h.IP))
		}
	}
	s.cmd = exec.Command(Path, args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	// Ready once it answers over TCP on the port (it listens on both).
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("dnsmasq did not start on %s: %v", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends the server; a stopped server does not answer at all.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

func freePort(t *testing.T) string {
	t.Helper()
	pc, ln := Listen(t)
	pc.Close()
	ln.Close()
	return pc.LocalAddr().String()
}

// Listen binds one loopback port for UDP and TCP alike, as a DNS server
// needs both. The kernel hands out each protocol's ports on its own, so a
// port free for one may be taken for the other: try again then.
func Listen(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return nil, nil
}
