package geo_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"perigee/geo"
	"perigee/geo/demodb"
	"perigee/geo/internal/clientnet"
	"perigee/geo/rtt"
)

var netipZero netip.Addr

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// served answers "here" so tests can tell local service from steering.
var served = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "here") })

type reply struct {
	code   int
	header http.Header
	body   string
}

// get sends a request from loopback, claiming to be on behalf of client.
func get(t *testing.T, url string, client netip.Addr, extra http.Header) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if client.IsValid() {
		req.Header.Set("X-Forwarded-For", client.String())
	}
	for k, v := range extra {
		req.Header[k] = v
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

// decisions reads the router's counter for one action and reason.
func decisions(t *testing.T, rt *geo.Router, action string, reason geo.Reason) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(rt.Collector()); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["action"] == action && labels["reason"] == string(reason) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestRedirectSendsClientToBestNode(t *testing.T) {
	rt := geo.NewRouter(geo.RouterConfig{Trusted: loopback}, openDemo(t), threeNodes("fra"), nil)
	srv := httptest.NewServer(rt.Steer(geo.SteerRedirect, served))
	defer srv.Close()

	r := get(t, srv.URL+"/api/items?page=2", demodb.Tokyo.Client(), nil)
	if r.code != http.StatusTemporaryRedirect || r.header.Get("Location") != "https://tyo.example.net/api/items?page=2" {
		t.Fatalf("tokyo: %d %q", r.code, r.header.Get("Location"))
	}
	if r := get(t, srv.URL+"/api/items", demodb.Frankfurt.Client(), nil); r.code != http.StatusOK || r.body != "here" {
		t.Fatalf("frankfurt: %d %q", r.code, r.body)
	}
	// A request another node already steered is served, never bounced.
	steered := http.Header{geo.SteeredHeader: {"iad"}}
	if r := get(t, srv.URL+"/", demodb.Tokyo.Client(), steered); r.code != http.StatusOK {
		t.Fatalf("steered request redirected again: %d", r.code)
	}
	if n := decisions(t, rt, "redirect", geo.ReasonLowestLatency); n != 1 {
		t.Errorf("redirects counted %v, want 1", n)
	}
	if n := decisions(t, rt, "serve", geo.ReasonLowestLatency); n != 1 {
		t.Errorf("served counted %v, want 1", n)
	}

	permanent := geo.NewRouter(geo.RouterConfig{Trusted: loopback, RedirectCode: 308}, openDemo(t), threeNodes("fra"), nil)
	srv308 := httptest.NewServer(permanent.Steer(geo.SteerRedirect, served))
	defer srv308.Close()
	if r := get(t, srv308.URL+"/x", demodb.Virginia.Client(), nil); r.code != http.StatusPermanentRedirect || r.header.Get("Location") != "https://iad.example.net/x" {
		t.Fatalf("308: %d %q", r.code, r.header.Get("Location"))
	}
}

// A redirect goes to the best node's public URL with the request's path
// and query after it. A request target that is no path (an opaque
// "x:@evil.example", which Go's server accepts on the wire, or "*") would
// be spliced after the node's host and choose the userinfo, the host name
// or the port: such a request is served here, not redirected.
func TestRedirectNeverLeavesTheBestNodesOrigin(t *testing.T) {
	rt := geo.NewRouter(geo.RouterConfig{Trusted: loopback}, openDemo(t), threeNodes("fra"), nil)
	srv := httptest.NewServer(rt.Steer(geo.SteerRedirect, served))
	defer srv.Close()
	for _, target := range []string{"x:@evil.example/", "x:.evil.example/", "x::8443/", "*"} {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: fra.example.net\r\nX-Forwarded-For: "+demodb.Tokyo.Client().String()+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusOK || string(body) != "here" {
			t.Errorf("target %q: %d to %q, want it served here", target, resp.StatusCode, loc)
		}
	}
	// A path target from the same client is still sent to Tokyo.
	if r := get(t, srv.URL+"/x", demodb.Tokyo.Client(), nil); r.header.Get("Location") != "https://tyo.example.net/x" {
		t.Fatalf("path target: %d %q", r.code, r.header.Get("Location"))
	}
}

func TestSpoofedForwardingFromUntrustedPeerIsIgnored(t *testing.T) {
	rt := geo.NewRouter(geo.RouterConfig{}, openDemo(t), threeNodes("fra"), nil)
	srv := httptest.NewServer(rt.Steer(geo.SteerRedirect, served))
	defer srv.Close()
	spoof := http.Header{"Forwarded": {"for=" + demodb.Tokyo.Client().String()}}
	r := get(t, srv.URL+"/", demodb.Tokyo.Client(), spoof)
	if r.code != http.StatusOK || r.body != "here" {
		t.Fatalf("spoofed header steered the client: %d %q", r.code, r.header.Get("Location"))
	}
	if n := decisions(t, rt, "serve", geo.ReasonUnknownClient); n != 1 {
		t.Errorf("loopback client should count as unknown-location, got %v", n)
	}
}

func TestAltSvcAdvertisesBestNode(t *testing.T) {
	f := threeNodes("fra")
	f.Update("tyo", func(n *geo.Node) { n.PublicURL = "https://tyo.example.net:8443" })
	rt := geo.NewRouter(geo.RouterConfig{Trusted: loopback}, openDemo(t), f, nil)
	srv := httptest.NewServer(rt.Steer(geo.SteerAltSvc, served))
	defer srv.Close()
	r := get(t, srv.URL+"/", demodb.Tokyo.Client(), nil)
	if r.code != http.StatusOK || r.body != "here" || r.header.Get("Alt-Svc") != `h3="tyo.example.net:8443"; ma=60` {
		t.Fatalf("tokyo: %d %q %q", r.code, r.body, r.header.Get("Alt-Svc"))
	}
	r = get(t, srv.URL+"/", demodb.Virginia.Client(), nil)
	if r.header.Get("Alt-Svc") != `h3="iad.example.net:443"; ma=60` {
		t.Fatalf("virginia: %q", r.header.Get("Alt-Svc"))
	}
	if r := get(t, srv.URL+"/", demodb.Frankfurt.Client(), nil); r.header.Get("Alt-Svc") != "" {
		t.Fatalf("advertised itself: %q", r.header.Get("Alt-Svc"))
	}
	// Plain-HTTP nodes cannot be HTTP/3 alternatives.
	f.Update("tyo", func(n *geo.Node) { n.PublicURL = "http://tyo.example.net" })
	if r := get(t, srv.URL+"/", demodb.Tokyo.Client(), nil); r.header.Get("Alt-Svc") != "" || r.body != "here" {
		t.Fatalf("http alternative: %q", r.header.Get("Alt-Svc"))
	}
}

func TestProxySpillsOverWhenThisNodeIsFull(t *testing.T) {
	// The Tokyo node is a real server reporting what it received.
	tyo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{
			"path": r.URL.RequestURI(), "xff": r.Header.Get("X-Forwarded-For"), "steered": r.Header.Get(geo.SteeredHeader),
		})
	}))
	defer tyo.Close()
	f := threeNodes("fra")
	f.Update("tyo", func(n *geo.Node) { n.PublicURL = tyo.URL })
	rt := geo.NewRouter(geo.RouterConfig{Trusted: loopback}, openDemo(t), f, nil)
	srv := httptest.NewServer(rt.Steer(geo.SteerProxy, served))
	defer srv.Close()

	// Not full: even a far client is served here, as a detour costs more.
	if r := get(t, srv.URL+"/a", demodb.Tokyo.Client(), nil); r.body != "here" {
		t.Fatalf("proxied without need: %q", r.body)
	}
	f.Update("fra", func(n *geo.Node) { n.InFlight = 99 })
	r := get(t, srv.URL+"/a?b=c", demodb.Tokyo.Client(), nil)
	var seen map[string]string
	if err := json.Unmarshal([]byte(r.body), &seen); err != nil || r.code != http.StatusOK {
		t.Fatalf("proxy: %d %q", r.code, r.body)
	}
	if seen["path"] != "/a?b=c" || seen["xff"] != demodb.Tokyo.Client().String() || seen["steered"] != "fra" {
		t.Fatalf("upstream saw %v", seen)
	}
	if n := decisions(t, rt, "proxy", geo.ReasonLowestLatency); n != 1 {
		t.Errorf("proxy counted %v", n)
	}
	// Heavily loaded but not full: spill when the detour beats the queue.
	f.Update("fra", func(n *geo.Node) { n.InFlight = 94 }) // ~156ms queue here
	f.Update("tyo", func(n *geo.Node) { n.RTTFromSelf = 30 * time.Millisecond })
	if r := get(t, srv.URL+"/", demodb.Tokyo.Client(), nil); !strings.Contains(r.body, `"steered":"fra"`) {
		t.Fatalf("no spill under load: %q", r.body)
	}
	// The target going away gives a clean 502.
	tyo.Close()
	if r := get(t, srv.URL+"/", demodb.Tokyo.Client(), nil); r.code != http.StatusBadGateway {
		t.Fatalf("dead target: %d %q", r.code, r.body)
	}
}

func TestSteerFeedsConnectionRTTToLearner(t *testing.T) {
	learner := rtt.NewLearner(rtt.Config{Self: "fra"})
	rt := geo.NewRouter(geo.RouterConfig{}, openDemo(t), threeNodes("fra"), learner)
	srv := &http.Server{Handler: rt.Steer(geo.SteerOff, served), ConnContext: rtt.ConnContext}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	if r := get(t, "http://"+ln.Addr().String()+"/", netip.Addr{}, nil); r.body != "here" {
		t.Fatalf("off mode: %q", r.body)
	}
	e, ok := learner.Estimate(clientnet.Of(netip.MustParseAddr("127.0.0.1")), rtt.NoCell, "fra", time.Now())
	if !ok || e.Samples != 1 || e.RTT <= 0 {
		t.Fatalf("no RTT learnt: %+v %v", e, ok)
	}
}

func TestParseSteerMode(t *testing.T) {
	for in, want := range map[string]geo.SteerMode{"": geo.SteerOff, "off": geo.SteerOff, "redirect": geo.SteerRedirect, "alt-svc": geo.SteerAltSvc, "proxy": geo.SteerProxy} {
		if got, err := geo.ParseSteerMode(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	if _, err := geo.ParseSteerMode("teleport"); err == nil {
		t.Error("unknown mode accepted")
	}
}

// spillTo serves a proxy-steering router of fra, full, that spills every
// client to the other nodes, which answer what seen says of the request.
func spillTo(t *testing.T, seen func(*http.Request) string) *httptest.Server {
	next := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, seen(r))
	}))
	t.Cleanup(next.Close)
	f := threeNodes("fra")
	f.Update("tyo", func(n *geo.Node) { n.PublicURL = next.URL })
	f.Update("iad", func(n *geo.Node) { n.PublicURL = next.URL })
	f.Update("fra", func(n *geo.Node) { n.InFlight = 99 }) // full: every client spills
	rt := geo.NewRouter(geo.RouterConfig{Trusted: loopback}, openDemo(t), f, nil)
	srv := httptest.NewServer(rt.Steer(geo.SteerProxy, served))
	t.Cleanup(srv.Close)
	return srv
}

// A request whose client the node could not resolve (here a trusted proxy
// passed a client's own Forwarded beside its X-Forwarded-For) is spilled
// with X-Forwarded-For: unknown, not with the trusted hop's address as its
// client: the next node, which trusts this one, would vouch for that.
func TestProxySpillDoesNotLaunderAnUnknownClient(t *testing.T) {
	srv := spillTo(t, func(r *http.Request) string { return r.Header.Get("X-Forwarded-For") })
	r := get(t, srv.URL+"/", demodb.Tokyo.Client(), http.Header{"Forwarded": {"for=" + demodb.Virginia.Client().String()}})
	if r.code != http.StatusOK || r.body != "unknown" {
		t.Fatalf("spilled with X-Forwarded-For %q (%d), want unknown", r.body, r.code)
	}
}

// A spilled request carries Via naming this node, as every request its
// proxy sends does (RFC 9110 7.6.3): a node that finds its own name there
// (its route's loop guard, its admin API) knows the request went through
// it. Without it a peer whose public_url is this host's admin listener (a
// typo'd port on a one-host fleet) handed every spilled client the admin
// API, which answers loopback without a token.
func TestProxySpillSaysItPassedThroughThisNode(t *testing.T) {
	srv := spillTo(t, func(r *http.Request) string { return strings.Join(r.Header.Values("Via"), ", ") })
	r := get(t, srv.URL+"/", demodb.Tokyo.Client(), http.Header{"Via": {"1.1 cdn"}})
	if r.code != http.StatusOK || r.body != "1.1 cdn, 1.1 fra" {
		t.Fatalf("the next node saw Via %q (%d), want the client's hops and then 1.1 fra", r.body, r.code)
	}
}

// Measurements reach only the nodes of the measuring node's region (the
// mesh gossips them there). fra measured its Frankfurt clients over a bad
// path and redirected them to iad, of another region; iad, which never saw
// those measurements, ranks fra by the model alone and redirected them back
// to fra, and so on until the browser gave up. A node sends a client on, on
// the strength of its own measurements, only to a node that holds them or
// that would keep the client all the same.
func TestRedirectsDoNotBounceBetweenRegions(t *testing.T) {
	db := openDemo(t)
	now := time.Now()
	learners := map[string]*rtt.Learner{
		"fra": rtt.NewLearner(rtt.Config{Self: "fra", Locate: db.LatLon, Now: func() time.Time { return now }}),
		"iad": rtt.NewLearner(rtt.Config{Self: "iad", Locate: db.LatLon}),
	}
	for range 20 {
		learners["fra"].Observe(demodb.Frankfurt.Client(), 250*time.Millisecond)
		now = now.Add(10 * time.Second)
	}
	handlers := map[string]http.Handler{}
	routers := map[string]*geo.Router{}
	servers := map[string]*httptest.Server{}
	for id := range learners {
		servers[id] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handlers[id].ServeHTTP(w, r) }))
		defer servers[id].Close()
	}
	for id, l := range learners {
		f := threeNodes(id)
		for other, s := range servers {
			f.Update(other, func(n *geo.Node) { n.PublicURL = s.URL })
		}
		f.Update("tyo", func(n *geo.Node) { n.Alive = false })
		routers[id] = geo.NewRouter(geo.RouterConfig{Trusted: loopback}, db, f, l)
		handlers[id] = routers[id].Steer(geo.SteerRedirect, served)
	}
	url, hops := servers["fra"].URL+"/x", 0
	for ; hops < 5; hops++ {
		r := get(t, url, demodb.Frankfurt.Client(), nil)
		if r.code != http.StatusTemporaryRedirect {
			break
		}
		url = r.header.Get("Location")
	}
	if hops > 1 {
		t.Fatalf("the client was redirected %d times, last to %s", hops, url)
	}
	if d := routers["fra"].Explain(demodb.Frankfurt.Client()); d.Reason != geo.ReasonWouldBounce || !strings.Contains(d.Why, "would send the client back") {
		t.Errorf("fra explains %s: %s", d.Reason, d.Why)
	}

	// Once iad holds fra's measurements (the two gossip them to each
	// other), fra sends the client on and iad keeps it.
	if err := learners["iad"].Merge("fra", learners["fra"].Summary()); err != nil {
		t.Fatal(err)
	}
	if err := learners["fra"].Merge("iad", learners["iad"].Summary()); err != nil {
		t.Fatal(err)
	}
	r := get(t, servers["fra"].URL+"/x", demodb.Frankfurt.Client(), nil)
	if r.code != http.StatusTemporaryRedirect || r.header.Get("Location") != servers["iad"].URL+"/x" {
		t.Fatalf("with shared measurements: %d to %q, want iad", r.code, r.header.Get("Location"))
	}
	if r := get(t, servers["iad"].URL+"/x", demodb.Frankfurt.Client(), nil); r.code != http.StatusOK || r.body != "here" {
		t.Fatalf("iad, holding fra's measurements: %d %q, want it served", r.code, r.body)
	}
}

// A node's public URL comes from its metadata (the mesh checks only that
// it parses as an http(s) URL with a host), and Go's URL parser takes a
// quote in a host name. The host was written into Alt-Svc's quoted
// alt-authority as it was, so this one closed the quotes and added an
// alternative of its own choosing for a year, persisting across network
// changes. Only a host name or an IP address is advertised.
func TestAltSvcAdvertisesOnlyAHost(t *testing.T) {
	f := threeNodes("fra")
	rt := geo.NewRouter(geo.RouterConfig{Trusted: loopback}, openDemo(t), f, nil)
	srv := httptest.NewServer(rt.Steer(geo.SteerAltSvc, served))
	defer srv.Close()
	for _, u := range []string{`https://tyo";ma=31536000;persist=1,h3="evil.example:443`, `https://a"b`, "https://a,b", "https://[fe80::1%25eth0]:443"} {
		f.Update("tyo", func(n *geo.Node) { n.PublicURL = u })
		if r := get(t, srv.URL+"/", demodb.Tokyo.Client(), nil); r.code != http.StatusOK || r.header.Get("Alt-Svc") != "" {
			t.Errorf("public URL %q: %d, Alt-Svc %q", u, r.code, r.header.Get("Alt-Svc"))
		}
	}
	for u, want := range map[string]string{"https://[2001:db8::1]:8443": `h3="[2001:db8::1]:8443"; ma=60`, "https://192.0.2.7": `h3="192.0.2.7:443"; ma=60`, "https://tyo-1.example.net.": `h3="tyo-1.example.net.:443"; ma=60`} {
		f.Update("tyo", func(n *geo.Node) { n.PublicURL = u })
		if r := get(t, srv.URL+"/", demodb.Tokyo.Client(), nil); r.header.Get("Alt-Svc") != want {
			t.Errorf("public URL %q: Alt-Svc %q, want %q", u, r.header.Get("Alt-Svc"), want)
		}
	}
}
