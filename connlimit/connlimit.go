// Package connlimit bounds the connections a listener holds: all together,
// and per client address, where an address is an IPv4 address or an IPv6
// /64 (one host may own a whole /64, and pick a new address from it for
// each connection). Each connection costs its server a goroutine, TLS or
// QUIC state and buffers until its timeouts end it; without a bound, one
// hostile host could hold as many as it likes, and every other client
// would share what is left.
//
// A Limiter counts; Listen bounds a net.Listener with one, and h3serve a
// QUIC listener (see h3serve.WithConnLimit).
package connlimit

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Settings are one listener's bounds.
type Settings struct {
	// MaxTotal is how many connections the listener holds at once.
	MaxTotal int `yaml:"max_total" json:"max_total"`
	// MaxPerAddress is how many of them one client address may hold.
	MaxPerAddress int `yaml:"max_per_address" json:"max_per_address"`
}

// The defaults a gateway ships with. MaxTotal, at the 25-100 KiB an idle
// TLS or QUIC connection costs a Go server, holds 0.8-3 GiB at most, and is
// more than one node's sockets usually see. MaxPerAddress leaves room for a
// carrier-grade NAT address shared by a hundred or so subscribers, each
// browser with up to six HTTP/1.1 connections, while one host is held to
// 1/32 of the listener.
const (
	DefaultMaxTotal      = 32768
	DefaultMaxPerAddress = 1024
)

// MaxBound bounds both settings, so a typo cannot mean "unbounded".
const MaxBound = 1 << 20

// SetDefaults fills what the config leaves out.
func (s *Settings) SetDefaults() {
	if s.MaxTotal == 0 {
		s.MaxTotal = DefaultMaxTotal
	}
	if s.MaxPerAddress == 0 {
		s.MaxPerAddress = DefaultMaxPerAddress
	}
}

// Validate reports every problem as "field: what".
func (s Settings) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{{"max_total", s.MaxTotal}, {"max_per_address", s.MaxPerAddress}} {
		if f.v < 1 || f.v > MaxBound {
			errs = append(errs, fmt.Errorf("%s: %s must be 1..%d, got %d", f.name, f.name, MaxBound, f.v))
		}
	}
	if s.MaxPerAddress > s.MaxTotal && s.MaxTotal >= 1 {
		errs = append(errs, fmt.Errorf("max_per_address: max_per_address (%d) is over max_total (%d)", s.MaxPerAddress, s.MaxTotal))
	}
	return errors.Join(errs...)
}

// The refusals, by the bound that refused.
var (
	ErrTotal      = errors.New("the listener holds max_total connections")
	ErrPerAddress = errors.New("the client address holds max_per_address connections")
)

// logEvery is how often a limiter may log its refusals: a flood of them
// must not flood the log.
const logEvery = 10 * time.Second

// Limiter counts one listener's connections. Its lock is held for a map
// update per connection opened or closed, never per request.
type Limiter struct {
	name string
	log  *slog.Logger

	mu    sync.Mutex
	s     Settings
	total int
	per   map[netip.Prefix]int

	refusedTotal, refusedPerAddress atomic.Uint64
	lastLog                         atomic.Int64  // unix nanoseconds of the last refusal logged
	logged                          atomic.Uint64 // refusals counted when it was
}

// New counts connections within s, which must be valid, for the listener
// name; refusals are logged to log (nil: not logged) at most every
// logEvery.
func New(name string, s Settings, log *slog.Logger) *Limiter {
	return &Limiter{name: name, log: log, s: s, per: map[netip.Prefix]int{}}
}

// Set changes the bounds. Connections already held stay, even over a
// lowered bound; new ones are counted against it.
func (l *Limiter) Set(s Settings) {
	l.mu.Lock()
	l.s = s
	l.mu.Unlock()
}

// Acquire counts a connection from addr, or refuses it with ErrTotal or
// ErrPerAddress. release uncounts it; calls after the first do nothing.
func (l *Limiter) Acquire(addr net.Addr) (release func(), err error) {
	key := Key(addr)
	if err := l.take(key); err != nil {
		if l.refused(err) { // a flood of them allocates nothing
			l.logRefused(addr.String(), err)
		}
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { l.Release(key) }) }, nil
}

// AcquireIP counts one more of whatever the limiter bounds (a request in
// flight) for the client ip, or refuses it as Acquire does. The key it
// returns is for Release, called once.
func (l *Limiter) AcquireIP(ip netip.Addr) (netip.Prefix, error) {
	key := KeyIP(ip)
	if err := l.take(key); err != nil {
		if l.refused(err) {
			l.logRefused(ip.String(), err)
		}
		return netip.Prefix{}, err
	}
	return key, nil
}

func (l *Limiter) take(key netip.Prefix) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.s.MaxTotal:
		return ErrTotal
	case l.per[key] >= l.s.MaxPerAddress:
		return ErrPerAddress
	}
	l.total++
	l.per[key]++
	return nil
}

// Release uncounts what AcquireIP counted against key.
func (l *Limiter) Release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.per[key]--; l.per[key] <= 0 {
		delete(l.per, key)
	}
}

// Crowded reports whether the listener or addr holds half its bound or
// more: then a QUIC listener asks a new connection to prove its source
// address (a Retry) before it gets a slot, so that packets with spoofed
// sources cannot take the slots that are left.
func (l *Limiter) Crowded(addr net.Addr) bool {
	key := Key(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	return 2*l.total >= l.s.MaxTotal || 2*l.per[key] >= l.s.MaxPerAddress
}

// Stats are a limiter's figures.
type Stats struct {
	Name                            string
	Open                            int    // connections held now
	RefusedTotal, RefusedPerAddress uint64 // since the limiter was made
}

// Stats reads the limiter's figures.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	open := l.total
	l.mu.Unlock()
	return Stats{Name: l.name, Open: open, RefusedTotal: l.refusedTotal.Load(), RefusedPerAddress: l.refusedPerAddress.Load()}
}

// refused counts a refusal, and reports whether to log it: unless a line
// went out within logEvery.
func (l *Limiter) refused(err error) bool {
	if errors.Is(err, ErrPerAddress) {
		l.refusedPerAddress.Add(1)
	} else {
		l.refusedTotal.Add(1)
	}
	if l.log == nil {
		return false
	}
	now, last := time.Now().UnixNano(), l.lastLog.Load()
	return now-last >= int64(logEvery) && l.lastLog.CompareAndSwap(last, now)
}

// logRefused logs the refusals since the last line, the last of them
// from client.
func (l *Limiter) logRefused(client string, err error) {
	all := l.refusedTotal.Load() + l.refusedPerAddress.Load()
	since := all - l.logged.Swap(all)
	l.log.Warn("connections refused", "listener", l.name, "refused", since, "last_client", client, "reason", err.Error(),
		"next_log_within", logEvery)
}

// Key is the client address a connection from addr counts against: its IP
// for IPv4 (an IPv4-mapped IPv6 address is IPv4), its /64 for IPv6. An
// address of no IP (a Unix socket) counts against the zero Prefix.
func Key(addr net.Addr) netip.Prefix {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if addr != nil {
			if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
				ip = ap.Addr()
			}
		}
	}
	return KeyIP(ip)
}

// KeyIP is Key for the address ip.
func KeyIP(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits) // the zero Prefix for no IP
	return p
}
