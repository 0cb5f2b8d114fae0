// Package discovery finds a service's backends in DNS, the interface
// Consul, Kubernetes headless services and CoreDNS all serve: SRV records
// (port, priority, weight) or A/AAAA records with a configured port,
// re-resolved within their TTL. A resolver that fails, or an answer that
// suddenly comes back empty, never takes the last good set away at once.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"perigee/units"
)

// Config is a service's `discovery:` section; an empty DNS name turns it off.
type Config struct {
	// DNS is an SRV name (_service._proto.domain) or, with Port, a host
	// name whose A/AAAA records are the backends.
	DNS      string         `yaml:"dns" json:"dns,omitempty"`
	Port     int            `yaml:"port" json:"port,omitempty"`
	Scheme   string         `yaml:"scheme" json:"scheme,omitempty"`     // how backends are spoken to: http or https
	Resolver string         `yaml:"resolver" json:"resolver,omitempty"` // host:port; empty: the system's (/etc/resolv.conf)
	Interval units.Duration `yaml:"interval" json:"interval,omitempty"` // longest time between resolutions; a shorter TTL wins
	Timeout  units.Duration `yaml:"timeout" json:"timeout,omitempty"`   // one query
	// EmptyGrace is how long an empty answer after a good one keeps the
	// last good set: an emptied zone is more often a mistake than intent.
	EmptyGrace units.Duration `yaml:"empty_grace" json:"empty_grace,omitempty"`
	// AllowLoopback and AllowLinkLocal let discovered backends be on this
	// host, or link-local addresses and the clouds' metadata services,
	// which are refused by default: see noBackend.
	AllowLoopback  bool `yaml:"allow_loopback" json:"allow_loopback,omitempty"`
	AllowLinkLocal bool `yaml:"allow_link_local" json:"allow_link_local,omitempty"`
}

// MinInterval bounds re-resolution from below, however short the TTL.
const MinInterval = time.Second

// maxEndpoints bounds what one answer may add to a service.
const maxEndpoints = 1000

// Enabled reports whether the service discovers backends.
func (c Config) Enabled() bool { return c.DNS != "" }

// SRV reports whether the name is looked up as SRV records.
func (c Config) SRV() bool { return strings.HasPrefix(c.DNS, "_") }

// SameEndpoints reports whether o names the same endpoints as c: the
// same records, port, scheme and address rules, however either is tuned
// (interval, timeout, grace, resolver).
func (c Config) SameEndpoints(o Config) bool {
	return strings.EqualFold(dns.Fqdn(c.DNS), dns.Fqdn(o.DNS)) && c.Port == o.Port && c.Scheme == o.Scheme &&
		c.AllowLoopback == o.AllowLoopback && c.AllowLinkLocal == o.AllowLinkLocal
}

// SetDefaults fills what the config leaves out.
func (c *Config) SetDefaults() {
	if !c.Enabled() {
		return
	}
	if c.Scheme == "" {
		c.Scheme = "http"
	}
	for _, d := range []struct {
		v   *units.Duration
		def time.Duration
	}{{&c.Interval, 5 * time.Second}, {&c.Timeout, 2 * time.Second}, {&c.EmptyGrace, time.Minute}} {
		if *d.v == 0 {
			*d.v = units.Duration(d.def)
		}
	}
}

// Validate reports every problem as "field: what".
func (c Config) Validate() error {
	if !c.Enabled() {
		if c != (Config{}) {
			return errors.New("dns: discovery needs a dns name")
		}
		return nil
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, ok := dns.IsDomainName(c.DNS); !ok {
		bad("dns", "%q is not a DNS name", c.DNS)
	}
	switch {
	case c.SRV() && c.Port != 0:
		bad("port", "an SRV name (%s) carries its own ports; port is for A/AAAA names", c.DNS)
	case !c.SRV() && (c.Port < 1 || c.Port > 65535):
		bad("port", "an A/AAAA name needs port 1..65535 (or use an SRV name, _service._proto.domain)")
	}
	if c.Scheme != "http" && c.Scheme != "https" {
		bad("scheme", "discovery scheme must be http or https, got %q", c.Scheme)
	}
	if c.Resolver != "" {
		_, port, err := net.SplitHostPort(c.Resolver)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
			bad("resolver", "discovery resolver must be host:port, port 1..65535, got %q", c.Resolver)
		}
	}
	if c.Interval.D() < MinInterval || c.Interval.D() > time.Hour {
		bad("interval", "discovery interval must be %s..1h, got %s", MinInterval, c.Interval.D())
	}
	if c.Timeout.D() <= 0 || c.Timeout.D() > 30*time.Second {
		bad("timeout", "discovery timeout must be over 0 and at most 30s, got %s", c.Timeout.D())
	}
	if c.EmptyGrace.D() < 0 || c.EmptyGrace.D() > 24*time.Hour {
		bad("empty_grace", "empty_grace must be 0..24h, got %s", c.EmptyGrace.D())
	}
	return errors.Join(errs...)
}

// Endpoint is one discovered backend.
type Endpoint struct {
	URL    string // scheme://host:port
	Weight int    // 1..1000, from the SRV weight (1 for A/AAAA)
}

// Answer is one resolution: the endpoints and how long they hold.
type Answer struct {
	Endpoints []Endpoint
	TTL       time.Duration
	// Unresolved are SRV targets skipped because DNS says they have no
	// address (NXDOMAIN, or no A/AAAA record); the first maxListed, sorted.
	Unresolved []string
	// Refused are addresses the answer named that no backend may have;
	// the first maxListed, sorted.
	Refused []string
}

// ErrEmpty is an answer with no records in it.
var ErrEmpty = errors.New("empty answer")

// errNoSuchName is an NXDOMAIN answer: the name does not exist.
var errNoSuchName = errors.New("NXDOMAIN")

// Resolver asks one DNS server, or the system's in turn.
type Resolver struct {
	servers []string
	timeout time.Duration
}

// NewResolver uses server (host:port) or, when empty, the system's.
func NewResolver(server string, timeout time.Duration) (*Resolver, error) {
	if server != "" {
		return &Resolver{servers: []string{server}, timeout: timeout}, nil
	}
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("system resolvers: %w", err)
	}
	r := &Resolver{timeout: timeout}
	for _, s := range cc.Servers {
		r.servers = append(r.servers, net.JoinHostPort(s, cc.Port))
	}
	if len(r.servers) == 0 {
		return nil, errors.New("system resolvers: none in /etc/resolv.conf")
	}
	return r, nil
}

// resolveQueries bounds one resolution's time to this many query
// timeouts, however many SRV targets an answer names.
const resolveQueries = 4

// Resolve looks the config's name up once.
func (r *Resolver) Resolve(ctx context.Context, c Config) (Answer, error) {
	ctx, cancel := context.WithTimeout(ctx, resolveQueries*r.timeout)
	defer cancel()
	if !c.SRV() {
		ips, ttl, refused, err := r.addrs(ctx, c.DNS, nil, c)
		if err != nil {
			return Answer{}, err
		}
		return sorted(Answer{Endpoints: endpoints(ips, c.Port, 1, c.Scheme, nil, map[string]bool{}), TTL: ttl, Refused: refused}), nil
	}
	msg, err := r.query(ctx, c.DNS, dns.TypeSRV)
	if err != nil {
		return Answer{}, err
	}
	owners, err := chain(msg.Answer, c.DNS)
	if err != nil {
		return Answer{}, err
	}
	var srvs []*dns.SRV
	ttl := time.Duration(-1)
	for _, rr := range msg.Answer {
		if s, ok := rr.(*dns.SRV); ok && owners[dns.CanonicalName(s.Hdr.Name)] && s.Port != 0 && s.Target != "." {
			srvs = append(srvs, s)
			ttl = minTTL(ttl, s.Hdr.Ttl)
		}
	}
	if len(srvs) == 0 {
		return Answer{}, ErrEmpty
	}
	// Heaviest first, so that of two records for one target and port the
	// larger weight counts, whatever order a server rotates them in.
	slices.SortStableFunc(srvs, func(a, b *dns.SRV) int { return int(b.Weight) - int(a.Weight) })
	// RFC 2782: the lowest priority is the one in use; weights share it.
	best := slices.MinFunc(srvs, func(a, b *dns.SRV) int { return int(a.Priority) - int(b.Priority) }).Priority
	var a Answer
	seen := map[string]bool{}
	targets := map[string][]net.IP{} // one lookup per target, whatever its ports
	gathered := 0                    // addresses in targets
	for _, s := range srvs {
		if len(a.Endpoints) >= maxEndpoints || len(targets) >= maxEndpoints || gathered >= maxEndpoints {
			// The rest would cost lookups for endpoints dropped, or for
			// none: targets without addresses, or repeating those seen.
			break
		}
		if s.Priority != best {
			continue
		}
		ips, ok := targets[s.Target]
		if !ok {
			var hostTTL time.Duration
			var refused []string
			ips, hostTTL, refused, err = r.addrs(ctx, s.Target, msg.Extra, c)
			a.Refused = append(a.Refused, refused...)
			switch {
			case errors.Is(err, ErrEmpty) || errors.Is(err, errNoSuchName):
				// DNS says it has no address: one such target must not
				// hold back or empty the others. A failed lookup is
				// another matter: the answer would be short of a backend.
				a.Unresolved = append(a.Unresolved, s.Target)
			case err != nil:
				return Answer{}, fmt.Errorf("SRV target %s: %w", s.Target, err)
			default:
				ttl = min(ttl, hostTTL)
			}
			targets[s.Target] = ips
			gathered += len(ips)
		}
		weight := min(max(int(s.Weight), 1), 1000)
		a.Endpoints = endpoints(ips, int(s.Port), weight, c.Scheme, a.Endpoints, seen)
	}
	a = sorted(a)
	if len(a.Endpoints) == 0 {
		if len(a.Refused) > 0 {
			return Answer{}, fmt.Errorf("no SRV target has an address a backend may have (%s; refused %s): %w",
				strings.Join(a.Unresolved, ", "), strings.Join(a.Refused, ", "), ErrEmpty)
		}
		return Answer{}, fmt.Errorf("no SRV target has an address (%s): %w", strings.Join(a.Unresolved, ", "), ErrEmpty)
	}
	a.TTL = max(ttl, 0)
	return a, nil
}

// endpoints appends one endpoint per address, up to maxEndpoints in all,
// skipping those seen.
func endpoints(ips []net.IP, port, weight int, scheme string, to []Endpoint, seen map[string]bool) []Endpoint {
	for _, ip := range ips {
		u := scheme + "://" + net.JoinHostPort(ip.String(), strconv.Itoa(port))
		if len(to) >= maxEndpoints || seen[u] {
			continue
		}
		seen[u] = true
		to = append(to, Endpoint{URL: u, Weight: weight})
	}
	return to
}

// sorted orders the endpoints and lists, so an answer in another order
// is the same.
func sorted(a Answer) Answer {
	slices.SortFunc(a.Endpoints, func(x, y Endpoint) int { return strings.Compare(x.URL, y.URL) })
	a.Unresolved, a.Refused = listed(a.Unresolved), listed(a.Refused)
	return a
}

// listed is the first maxListed of l, sorted, each once: the first few
// say what is wrong, whatever order a server rotates its records in.
func listed(l []string) []string {
	slices.Sort(l)
	l = slices.Compact(l)
	return l[:min(len(l), maxListed)]
}

// addrs resolves name to its A and AAAA records, from extra (an SRV
// answer's additional section) when it has them, and their smallest TTL.
func (r *Resolver) addrs(ctx context.Context, name string, extra []dns.RR, c Config) (ips []net.IP, ttl time.Duration, refused []string, err error) {
	ttl = -1
	add := func(ip net.IP, hdr *dns.RR_Header) {
		if noBackend(ip, c) {
			refused = append(refused, ip.String())
			return
		}
		ips, ttl = append(ips, ip), minTTL(ttl, hdr.Ttl)
	}
	// Only the name's own records: the additional section holds every
	// target's addresses, and an answer may hold a CNAME chain's.
	collect := func(rrs []dns.RR, owners map[string]bool) {
		for _, rr := range rrs {
			if !owners[dns.CanonicalName(rr.Header().Name)] {
				continue
			}
			switch v := rr.(type) {
			case *dns.A:
				add(v.A, &v.Hdr)
			case *dns.AAAA:
				add(v.AAAA, &v.Hdr)
			}
		}
	}
	collect(extra, map[string]bool{dns.CanonicalName(name): true})
	if len(ips) == 0 && len(refused) == 0 {
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
			msg, err := r.query(ctx, name, t)
			if errors.Is(err, ErrEmpty) {
				continue // a name may have only one family
			}
			if err != nil {
				return nil, 0, nil, err
			}
			owners, err := chain(msg.Answer, name)
			if err != nil {
				return nil, 0, nil, err
			}
			collect(msg.Answer, owners)
		}
	}
	refused = listed(refused)
	if len(ips) == 0 && len(refused) > 0 {
		return nil, 0, refused, fmt.Errorf("%s has only addresses no backend may have (%s): %w", name, strings.Join(refused, ", "), ErrEmpty)
	}
	if len(ips) == 0 {
		return nil, 0, nil, ErrEmpty
	}
	return ips[:min(len(ips), maxEndpoints)], max(ttl, 0), refused, nil
}

// maxAliases bounds the CNAME records followed from a name, as resolvers
// do (BIND follows 16).
const maxAliases = 16

// chain is name and the aliases its CNAME records in answer lead to. A
// chain that loops, or runs past maxAliases, is a broken zone: an error,
// which keeps the last good set, where an empty answer would end it.
func chain(answer []dns.RR, name string) (map[string]bool, error) {
	alias := map[string]string{}
	for _, rr := range answer {
		if c, ok := rr.(*dns.CNAME); ok {
			alias[dns.CanonicalName(c.Hdr.Name)] = dns.CanonicalName(c.Target)
		}
	}
	at := dns.CanonicalName(name)
	owners := map[string]bool{at: true}
	for next, ok := alias[at]; ok; next, ok = alias[at] {
		if owners[next] || len(owners) > maxAliases {
			return nil, fmt.Errorf("%s: CNAME chain loops or passes %d aliases", name, maxAliases)
		}
		owners[next], at = true, next
	}
	return owners, nil
}

// maxListed bounds the refused addresses, and the SRV targets without
// one, that an answer lists.
const maxListed = 16

// metadata are the clouds' instance-metadata services outside the
// link-local ranges: AWS's IPv6 one, Alibaba's, and Azure's WireServer.
var metadata = []netip.Addr{netip.MustParseAddr("fd00:ec2::254"), netip.MustParseAddr("100.100.100.200"), netip.MustParseAddr("168.63.129.16")}

// noBackend reports whether no discovered backend may be at ip. The
// unspecified address dials this host, the node's own listeners among
// them: a proxy loop. No backend is multicast or broadcast. And a DNS
// answer or registry entry naming this host (loopback), a link-local
// address (169.254.0.0/16, fe80::/10) or a metadata service would have
// the node proxy clients to what trusts only local callers: the node's
// own admin API, an agent, the instance's metadata and so its
// credentials; unless the operator said the backends live there. An
// address in NAT64's well-known prefix is the IPv4 address it embeds: a
// translator on this host reaches it as the host itself.
func noBackend(ip net.IP, c Config) bool {
	a, _ := netip.AddrFromSlice(ip)
	if nat64.Contains(a) {
		v4 := a.As16()
		ip = net.IP(v4[12:])
		a = netip.AddrFrom4([4]byte(v4[12:]))
	}
	if ip.IsUnspecified() || ip.IsMulticast() || ip.Equal(net.IPv4bcast) {
		return true
	}
	return !c.AllowLoopback && ip.IsLoopback() ||
		!c.AllowLinkLocal && (ip.IsLinkLocalUnicast() || slices.Contains(metadata, a.Unmap()))
}

// nat64 is NAT64's well-known prefix (RFC 6052), whose addresses embed an
// IPv4 address in their last 32 bits.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

func minTTL(cur time.Duration, ttl uint32) time.Duration {
	d := time.Duration(ttl) * time.Second
	if cur < 0 || d < cur {
		return d
	}
	return cur
}

// query asks each server in turn, until one answers; over TCP when the
// UDP answer was cut. NXDOMAIN (errNoSuchName) and SERVFAIL are errors;
// NOERROR with nothing is ErrEmpty.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	name = dns.Fqdn(name)
	m.SetQuestion(name, qtype)
	m.SetEdns0(4096, false)
	var errs []error
	for _, server := range r.servers {
		asked := name + " " + dns.TypeToString[qtype]
		in, err := r.exchange(ctx, m, server, "udp")
		if err == nil && in.Truncated {
			asked += " truncated over UDP; over TCP"
			in, err = r.exchange(ctx, m, server, "tcp")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", server, asked, err))
			continue
		}
		switch in.Rcode {
		case dns.RcodeSuccess:
			if len(in.Answer) == 0 {
				return nil, ErrEmpty
			}
			return in, nil
		case dns.RcodeNameError: // an answer like NOERROR's, not a failure to try elsewhere
			return nil, fmt.Errorf("%s: %s %w", server, name, errNoSuchName)
		default:
			errs = append(errs, fmt.Errorf("%s: %s %s", server, name, dns.RcodeToString[in.Rcode]))
		}
	}
	return nil, errors.Join(errs...)
}

func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, server, network string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &dns.Client{Net: network, Timeout: r.timeout}
	in, _, err := c.ExchangeContext(ctx, m, server)
	return in, err
}

// Status is what /services shows of a service's discovery.
type Status struct {
	Name        string    `json:"name"`
	Resolved    time.Time `json:"last_resolved,omitzero"` // the last good answer
	Error       string    `json:"last_error,omitempty"`   // the last failure, or why the answer is empty; cleared by a good answer
	Failures    uint64    `json:"failures"`               // resolutions that failed, since start
	StaleSince  time.Time `json:"stale_since,omitzero"`   // failing or empty since then, keeping the last good set
	KeptEmpty   bool      `json:"kept_empty,omitempty"`   // the answer is empty; the last good set is kept
	Unresolved  []string  `json:"unresolved,omitempty"`   // SRV targets of the last answer with no address
	Refused     []string  `json:"refused,omitempty"`      // addresses of the last answer no backend may have (link-local, metadata, …)
	Endpoints   int       `json:"endpoints"`
	NextResolve time.Time `json:"next_resolve,omitzero"`
}

// Watcher re-resolves a config and hands each new set to apply.
type Watcher struct {
	cfg   Config
	res   *Resolver
	apply func([]Endpoint)
	log   *slog.Logger

	mu     sync.Mutex
	status Status
	last   []Endpoint // the last set applied
}

// NewWatcher builds a watcher; last is the set already in use (from the
// service's previous version), kept until a good answer replaces it.
func NewWatcher(c Config, last []Endpoint, apply func([]Endpoint), log *slog.Logger) (*Watcher, error) {
	res, err := NewResolver(c.Resolver, c.Timeout.D())
	if err != nil {
		return nil, err
	}
	w := &Watcher{cfg: c, res: res, apply: apply, log: log.With("discovery", c.DNS), last: last}
	w.status.Name = c.DNS
	w.status.Endpoints = len(last)
	return w, nil
}

// Run resolves at once and then within each TTL, bounded by MinInterval
// and the config's interval, until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	for {
		wait := w.step(ctx, time.Now())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// step resolves once, applies what it should, and says when to resolve
// next.
func (w *Watcher) step(ctx context.Context, now time.Time) time.Duration {
	a, err := w.res.Resolve(ctx, w.cfg)
	if ctx.Err() != nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	st := &w.status
	wait := w.cfg.Interval.D()
	switch {
	case err == nil:
		wait = min(max(a.TTL, MinInterval), wait)
		st.Resolved, st.Error, st.StaleSince, st.KeptEmpty = now, "", time.Time{}, false
		if !slices.Equal(a.Unresolved, st.Unresolved) && len(a.Unresolved) > 0 {
			w.log.Warn("discovery skipped SRV targets without an address", "targets", a.Unresolved)
		}
		st.Unresolved = a.Unresolved
		if !slices.Equal(a.Refused, st.Refused) && len(a.Refused) > 0 {
			w.log.Warn("discovery refused addresses no backend may have", "addresses", a.Refused)
		}
		st.Refused = a.Refused
		w.set(a.Endpoints)
	case errors.Is(err, ErrEmpty) && len(w.last) > 0:
		st.KeptEmpty, st.Error = true, emptyWhy(err)
		if st.StaleSince.IsZero() {
			st.StaleSince = now
			w.log.Warn("discovery answered empty; keeping the last good set", "err", err, "kept", len(w.last), "for", w.cfg.EmptyGrace.D())
		}
		if now.Sub(st.StaleSince) >= w.cfg.EmptyGrace.D() {
			w.log.Warn("discovery still empty past empty_grace; the set is now empty")
			st.Resolved, st.StaleSince, st.KeptEmpty = now, time.Time{}, false
			w.set(nil)
		}
		wait = min(wait, max(w.cfg.EmptyGrace.D()-now.Sub(st.StaleSince), MinInterval))
	case errors.Is(err, ErrEmpty):
		st.Resolved, st.Error = now, emptyWhy(err)
		w.set(nil)
	default:
		st.Failures++
		st.Error = err.Error()
		if st.StaleSince.IsZero() {
			st.StaleSince = now
		}
		w.log.Warn("discovery failed; keeping the last good set", "err", err, "kept", len(w.last))
	}
	st.NextResolve = now.Add(wait)
	return wait
}

// emptyWhy is what an empty answer says of why it is empty, if more
// than that it is: every address refused, or every SRV target without one.
func emptyWhy(err error) string {
	if err == ErrEmpty {
		return ""
	}
	return err.Error()
}

func (w *Watcher) set(eps []Endpoint) {
	w.status.Endpoints = len(eps)
	if slices.Equal(eps, w.last) {
		return
	}
	w.last = eps
	w.apply(eps)
}

// Status reads the watcher's state.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}
