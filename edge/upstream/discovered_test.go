package upstream

import (
	"testing"
	"time"

	"perigee/edge/discovery"
	"perigee/units"
)

func TestDiscoveredBackendsKeepStateAndDrain(t *testing.T) {
	s := service(t, RoundRobin, 1) // static 127.0.0.1:9001
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9001", Weight: 9}, {URL: "http://127.0.0.1:9100", Weight: 2}, {URL: "http://127.0.0.1:9101", Weight: 1}})
	bs := s.Backends()
	if len(bs) != 3 || bs[0].Source != SourceStatic || bs[0].Weight() != 1 {
		t.Fatalf("a discovered address that is static must stay the static backend: %+v", s.Status(time.Now()).Backends)
	}
	kept, gone := bs[1], bs[2]
	if kept.Source != SourceDiscovery || kept.Weight() != 2 {
		t.Fatalf("discovered backend %+v", kept.Status(time.Now()))
	}
	kept.observe(42*time.Millisecond, time.Now())
	_ = s.Eject(kept.Addr, time.Hour)
	l, err := s.Acquire(plain(0), nil, false)
	for err == nil && l.Backend != gone { // hold a request on the one about to go
		l.End()
		l, err = s.Acquire(plain(0), nil, false)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetWeight(kept.Addr, 7); err != nil {
		t.Fatal(err)
	}
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 2}})
	if b := s.Backends()[1]; b != kept || b.Latency() != 42*time.Millisecond || b.Healthy(time.Now()) || b.Weight() != 7 {
		t.Fatal("a re-discovered backend lost its state (latency, ejection, the policy's weight)")
	}
	st := s.Status(time.Now())
	if len(s.Backends()) != 2 || len(st.Backends) != 3 || !st.Backends[2].Draining {
		t.Fatalf("the vanished backend is not draining: %+v", st.Backends)
	}
	for range 100 {
		if b, _ := s.Pick(plain(0), nil); b == gone {
			t.Fatal("a draining backend got a new request")
		}
	}
	l.End()
	if st := s.Status(time.Now()); len(st.Backends) != 2 {
		t.Fatal("a drained backend is still listed")
	}
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 4}})
	if kept.Weight() != 4 {
		t.Fatal("a weight discovery changed did not follow")
	}
	gone.observe(77*time.Millisecond, time.Now())
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 4}, {URL: "http://127.0.0.1:9101", Weight: 1}})
	if b := s.Backends()[2]; b != gone || b.Latency() != 77*time.Millisecond {
		t.Fatal("a backend back after a flap in DNS lost its state")
	}
}

func TestDiscoveredSetCarriesOverAReload(t *testing.T) {
	c := Config{Balancer: RoundRobin, Discovery: discovery.Config{DNS: "_api._tcp.example.internal", Resolver: "127.0.0.1:1"}}
	c.SetDefaults()
	s, err := NewService("svc", c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 3}})
	b := s.Backends()[0]
	s2, err := NewService("svc", c, s, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(s2.Backends()) != 1 || s2.Backends()[0] != b {
		t.Fatal("the discovered set did not carry over a reload")
	}
	if s2.Status(time.Now()).Changed != s.Status(time.Now()).Changed {
		t.Fatal("a reload that changed no backend moved backends_changed")
	}
}

// A reload that retunes discovery (its interval, timeout, grace or
// resolver) but names the same records dropped the discovered set: the
// new service started empty until its first answer, and with the
// resolver down, never got one. Only another name, port or scheme, which
// makes other endpoints, starts afresh.
func TestDiscoveredSetCarriesOverARetuningReload(t *testing.T) {
	c := Config{Balancer: RoundRobin, Discovery: discovery.Config{DNS: "_api._tcp.example.internal", Resolver: "127.0.0.1:1"}}
	c.SetDefaults()
	s, err := NewService("svc", c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.SetDiscovered([]discovery.Endpoint{{URL: "http://127.0.0.1:9100", Weight: 3}})
	retuned := c
	retuned.Discovery.Interval = units.Duration(time.Minute)
	retuned.Discovery.Timeout = units.Duration(time.Second)
	retuned.Discovery.EmptyGrace = units.Duration(time.Hour)
	retuned.Discovery.Resolver = "127.0.0.1:2"
	s2, err := NewService("svc", retuned, s, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(s2.Backends()) != 1 {
		t.Fatalf("a retuned discovery dropped the set: %d backends", len(s2.Backends()))
	}
	renamed := c
	renamed.Discovery.DNS = "_other._tcp.example.internal"
	s3, err := NewService("svc", renamed, s2, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(s3.Backends()) != 0 {
		t.Fatalf("another name kept the old set: %d backends", len(s3.Backends()))
	}
}
