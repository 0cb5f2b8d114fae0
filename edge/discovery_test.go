package edge

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"perigee/edge/discovery"
	"perigee/edge/discovery/dnstest"
	"perigee/edge/samplebackend"
	"perigee/edge/upstream"
)

// A service whose backends come from a real dnsmasq: traffic follows a
// changed SRV set within the TTL plus the interval, the backend that left
// drains its request in flight, and a stopped resolver leaves the last set
// serving.
func TestDiscoveryFollowsDNS(t *testing.T) {
	one := backend(t, "one")
	var held atomic.Int32
	release := make(chan struct{})
	sample := samplebackend.Handler(samplebackend.Options{Name: "two", Size: 64})
	two := serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			held.Add(1)
			<-release
		}
		sample.ServeHTTP(w, r)
	}))
	const name = "_api._tcp." + dnstest.Domain
	target := "b." + dnstest.Domain
	hosts := []dnstest.Host{{Name: target, IP: "127.0.0.1"}}
	srv := func(backendURL string, weight int) dnstest.SRV {
		u, _ := url.Parse(backendURL)
		_, p, _ := net.SplitHostPort(u.Host)
		port, _ := strconv.Atoi(p)
		return dnstest.SRV{Name: name, Target: target, Port: port, Weight: weight}
	}
	dns := dnstest.Start(t, []dnstest.SRV{srv(one, 1), srv(two, 1)}, hosts)
	const interval = time.Second // dnsmasq's TTL is 1s too
	n := startNode(t, listenAny+fmt.Sprintf(`services:
  api:
    discovery: {dns: %s, resolver: %q, interval: 1s, timeout: 200ms, allow_loopback: true}
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`, name, dns.Addr))
	base := "https://" + n.Addrs().HTTPS
	c := h1Client()
	from := func(path string) string {
		resp, _ := get(t, c, base+path)
		return resp.Header.Get("X-Backend")
	}
	waitFor(t, "both discovered backends serve", func() bool {
		seen := map[string]bool{}
		for range 10 {
			seen[from("/")] = true
		}
		return seen["one"] && seen["two"]
	})
	// Hold one request on "two", then take "two" out of DNS.
	slow := make(chan int, 1)
	go func() {
		for held.Load() == 0 {
			resp, err := c.Get(base + "/slow")
			if err != nil {
				slow <- 0
				return
			}
			resp.Body.Close()
			if resp.Header.Get("X-Backend") == "two" {
				slow <- resp.StatusCode
				return
			}
		}
	}()
	waitFor(t, "a request held on two", func() bool { return held.Load() == 1 })
	dns.Restart([]dnstest.SRV{srv(one, 1)}, hosts)
	changed := time.Now()
	waitFor(t, "traffic moved off the removed backend", func() bool {
		for range 10 {
			if from("/") != "one" {
				return false
			}
		}
		return true
	})
	moved := time.Since(changed)
	t.Logf("traffic moved %v after the DNS change (TTL 1s + interval 1s)", moved)
	if moved > 3*(time.Second+interval) {
		t.Fatalf("traffic took %v to move", moved)
	}
	st := services(t, n)
	if len(st.Backends) != 2 || !st.Backends[1].Draining || st.Backends[1].Source != upstream.SourceDiscovery || st.Changed.Before(changed) {
		t.Fatalf("/services while two drains: %+v", st)
	}
	close(release)
	if code := <-slow; code != 200 {
		t.Fatalf("the request in flight on the removed backend got %d, want it to finish", code)
	}
	// A stopped resolver leaves the last set serving.
	dns.Stop()
	waitFor(t, "the resolver's failure seen", func() bool {
		d := services(t, n).Discovery
		return d != nil && d.Failures > 0 && d.Error != ""
	})
	for range 10 {
		if b := from("/"); b != "one" {
			t.Fatalf("with the resolver down, got %q", b)
		}
	}
}

// serviceView is the part of /services these tests read.
type serviceView struct {
	Discovery *discovery.Status `json:"discovery"`
	Changed   time.Time         `json:"backends_changed"`
	Backends  []upstream.Status `json:"backends"`
}

func services(t *testing.T, n *testNode) serviceView {
	t.Helper()
	_, body := get(t, h1Client(), "http://"+n.Addrs().Admin+"/services")
	var out []serviceView
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out) != 1 {
		t.Fatalf("/services: %v %s", err, body)
	}
	return out[0]
}
