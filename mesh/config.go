package mesh

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/connlimit"
)

// Config is the `mesh:` section of the node config, plus test hooks.
type Config struct {
	Bind        string   `yaml:"bind"`      // ip:port to listen on, UDP and TCP
	Advertise   string   `yaml:"advertise"` // ip:port peers should use, if not Bind
	Join        []string `yaml:"join"`      // seeds: host:port, names may resolve to several
	Profile     string   `yaml:"profile"`   // lan (default) or wan
	KeyringFile string   `yaml:"keyring"`   // required unless bind and advertise are loopback; see ParseKeyring
	// Streams bounds the gossip port's TCP connections; zero fields take
	// DefaultStreams'.
	Streams connlimit.Settings `yaml:"streams"`

	// Timing overrides the profile's report timings where non-zero.
	Timing Timing `yaml:"-"`
	// Transport replaces the UDP/TCP sockets, e.g. with a faultnet one; Bind
	// is then ignored.
	Transport memberlist.Transport `yaml:"-"`
	// Tuning edits memberlist's settings last, e.g. to speed tests up.
	Tuning func(*memberlist.Config) `yaml:"-"`
	// Clock is the wall clock the node's report generation is read from;
	// time.Now when nil. Tests step it back.
	Clock func() time.Time `yaml:"-"`
}

// Timing is how often load reports are taken, sent and trusted.
type Timing struct {
	Sample     time.Duration // how often the report function is read
	Refresh    time.Duration // an unchanged report is re-sent this often
	StaleAfter time.Duration // a report older than this is shown as stale
	Rejoin     time.Duration // how often a lone node retries its seeds and a dead peer
	// Remember is how long a region member that failed still counts
	// towards the majority a leader must see (docs/mesh.md).
	Remember time.Duration
	// RetransmitMult scales how many times each node relays a region
	// summary or summary beat: RetransmitMult * ceil(log10(N+1)), as
	// memberlist does for its own.
	RetransmitMult int
	// SummaryGap is how often at most a region's summary is sent on a
	// change; SummaryRefresh, how often an unchanged one sends a beat;
	// SummaryStale, when a summary no longer counts (summary.go).
	SummaryGap, SummaryRefresh, SummaryStale time.Duration
	// Lease is how long a majority's confirmation lets a leader act
	// (lease.go). It must be shorter than the time the others take to
	// declare a leader dead, memberlist's shortest suspicion timeout.
	Lease time.Duration
}

// profiles holds the defaults documented in docs/mesh.md.
var profiles = map[string]Timing{
	"lan": {Sample: 250 * time.Millisecond, Refresh: 5 * time.Second, StaleAfter: 15 * time.Second, Rejoin: 5 * time.Second, Remember: 5 * time.Minute, RetransmitMult: 3,
		SummaryGap: 4 * time.Second, SummaryRefresh: 5 * time.Second, SummaryStale: 20 * time.Second, Lease: 2 * time.Second},
	"wan": {Sample: 500 * time.Millisecond, Refresh: 10 * time.Second, StaleAfter: 30 * time.Second, Rejoin: 15 * time.Second, Remember: 10 * time.Minute, RetransmitMult: 3,
		SummaryGap: 8 * time.Second, SummaryRefresh: 10 * time.Second, SummaryStale: 40 * time.Second, Lease: 10 * time.Second},
}

// Validate reports the first problem with c, naming the field.
func (c Config) Validate() error {
	if _, ok := profiles[c.profile()]; !ok {
		return fmt.Errorf("mesh.profile: %q is not lan or wan", c.Profile)
	}
	exposed := false // reachable from beyond this host
	if c.Transport == nil {
		ip, _, err := splitIPPort(c.Bind)
		if err != nil {
			return fmt.Errorf("mesh.bind: %w", err)
		}
		exposed = !ip.IsLoopback()
	}
	if c.Advertise != "" {
		ip, _, err := splitIPPort(c.Advertise)
		if err != nil {
			return fmt.Errorf("mesh.advertise: %w", err)
		}
		exposed = exposed || !ip.IsLoopback()
	}
	// Gossip decides membership, leaders and where clients are steered: an
	// unkeyed mesh lets anyone who can send a packet join and lead.
	if c.KeyringFile == "" && exposed {
		return errors.New("mesh.keyring: required when mesh.bind or mesh.advertise is not a loopback address (an unkeyed mesh admits any process that can reach it; see docs/mesh.md)")
	}
	if c.KeyringFile != "" {
		if _, err := ParseKeyring(c.KeyringFile); err != nil {
			return err
		}
	}
	if err := c.streams().Validate(); err != nil {
		if all, ok := err.(interface{ Unwrap() []error }); ok {
			err = all.Unwrap()[0]
		}
		return fmt.Errorf("mesh.streams.%w", err)
	}
	for i, j := range c.Join {
		if _, port, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("mesh.join[%d]: %q: want host:port: %w", i, j, err)
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("mesh.join[%d]: %q: bad port", i, j)
		}
	}
	t := c.Timing
	if t.Sample < 0 || t.Refresh < 0 || t.StaleAfter < 0 || t.Rejoin < 0 || t.Remember < 0 || t.RetransmitMult < 0 ||
		t.SummaryGap < 0 || t.SummaryRefresh < 0 || t.SummaryStale < 0 || t.Lease < 0 {
		return errors.New("mesh timing: durations and multipliers must not be negative")
	}
	return nil
}

func (c Config) now() time.Time {
	if c.Clock != nil {
		return c.Clock()
	}
	return time.Now()
}

func (c Config) profile() string {
	if c.Profile == "" {
		return "lan"
	}
	return c.Profile
}

// timing is the profile's timing with c's overrides applied.
func (c Config) timing() Timing {
	t := profiles[c.profile()]
	o := c.Timing
	for _, d := range []struct{ to, from *time.Duration }{
		{&t.Sample, &o.Sample}, {&t.Refresh, &o.Refresh}, {&t.StaleAfter, &o.StaleAfter},
		{&t.Rejoin, &o.Rejoin}, {&t.Remember, &o.Remember}, {&t.SummaryGap, &o.SummaryGap},
		{&t.SummaryRefresh, &o.SummaryRefresh}, {&t.SummaryStale, &o.SummaryStale}, {&t.Lease, &o.Lease},
	} {
		if *d.from > 0 {
			*d.to = *d.from
		}
	}
	if o.RetransmitMult > 0 {
		t.RetransmitMult = o.RetransmitMult
	}
	return t
}

// splitIPPort accepts only a literal IP and a port: a listener cannot bind
// a name that resolves to several addresses.
func splitIPPort(s string) (net.IP, int, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return nil, 0, fmt.Errorf("%q: want ip:port: %w", s, err)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, 0, fmt.Errorf("%q: %q is not an IP address", s, host)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("%q: bad port %q", s, portStr)
	}
	return ip, int(port), nil
}

// memberlistConfig builds memberlist's settings from the profile.
func (c Config) memberlistConfig(name string) (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig()
	if c.profile() == "wan" {
		mc = memberlist.DefaultWANConfig()
	}
	mc.Name = name
	// Push/pull repairs what gossip and direct sends missed; with beats
	// and repairs doing most of that, once a minute is enough, and halves
	// what it costs at 500 nodes (a push/pull carries every member).
	mc.PushPullInterval = max(mc.PushPullInterval, time.Minute)
	// A restarted node may come back on a new address under the same id
	// once its old self has been declared dead.
	mc.DeadNodeReclaimTime = mc.GossipToTheDeadTime
	if c.Transport != nil {
		mc.Transport = c.Transport
		mc.BindAddr, mc.BindPort = "", 0
	} else {
		// Start opens the sockets, bounded by c.Streams (streams.go).
		ip, port, _ := splitIPPort(c.Bind)
		mc.BindAddr, mc.BindPort = ip.String(), port
		mc.AdvertisePort = port
	}
	if c.Advertise != "" {
		ip, port, _ := splitIPPort(c.Advertise)
		mc.AdvertiseAddr, mc.AdvertisePort = ip.String(), port
	}
	if c.KeyringFile != "" {
		keys, err := ParseKeyring(c.KeyringFile)
		if err != nil {
			return nil, err
		}
		kr, err := memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			return nil, fmt.Errorf("mesh.keyring: %w", err)
		}
		mc.Keyring = kr
	}
	if c.Tuning != nil {
		c.Tuning(mc)
	}
	return mc, nil
}
