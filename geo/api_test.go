package geo_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"perigee/geo"
	"perigee/geo/demodb"
	"perigee/geo/geoip"
)

func TestNodesAPIRanksForCaller(t *testing.T) {
	f := threeNodes("fra")
	f.Update("iad", func(n *geo.Node) { n.Alive = false })
	rt := geo.NewRouter(geo.RouterConfig{Trusted: loopback}, openDemo(t), f, nil)
	srv := httptest.NewServer(rt.NodesHandler())
	defer srv.Close()
	r := get(t, srv.URL+geo.NodesPath, demodb.Tokyo.Client(), nil)
	var body struct {
		Client string
		Reason geo.Reason
		Nodes  []struct {
			ID         string  `json:"id"`
			URL        string  `json:"url"`
			ExpectedMs float64 `json:"expected_ms"`
			Self       bool    `json:"self"`
		}
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || r.code != http.StatusOK {
		t.Fatalf("%d %q %v", r.code, r.body, err)
	}
	if body.Client != demodb.Tokyo.Client().String() || body.Reason != geo.ReasonLowestLatency || len(body.Nodes) != 2 {
		t.Fatalf("%+v", body)
	}
	if body.Nodes[0].ID != "tyo" || body.Nodes[0].URL != "https://tyo.example.net" || body.Nodes[1].ID != "fra" || !body.Nodes[1].Self ||
		body.Nodes[0].ExpectedMs >= body.Nodes[1].ExpectedMs {
		t.Fatalf("ranking (dead iad must be absent): %+v", body.Nodes)
	}
	resp, err := http.Post(srv.URL, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

func TestExplainShowsEveryCandidate(t *testing.T) {
	f := threeNodes("fra")
	f.Update("tyo", func(n *geo.Node) { n.Draining = true })
	rt := geo.NewRouter(geo.RouterConfig{}, openDemo(t), f, nil)
	srv := httptest.NewServer(rt.ExplainHandler())
	defer srv.Close()
	r := get(t, srv.URL+"/geo/decide?ip="+demodb.Sydney.Client().String(), netipZero, nil)
	var body struct {
		Best     struct{ ID string }
		Reason   geo.Reason
		Location struct {
			City  string
			Known bool
		}
		Candidates []map[string]any
		Database   struct{ Type string }
		Placement  struct {
			Metros []struct {
				City   string
				Weight float64
			}
		}
		Why string
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || r.code != http.StatusOK {
		t.Fatalf("%d %q %v", r.code, r.body, err)
	}
	if body.Location.City != "Sydney" || body.Database.Type != "GeoLite2-City" || len(body.Candidates) != 3 {
		t.Fatalf("%s", r.body)
	}
	if len(body.Placement.Metros) == 0 || body.Placement.Metros[0].City != "Sydney" || body.Placement.Metros[0].Weight < 0.9 {
		t.Errorf("placement: %+v", body.Placement)
	}
	if !strings.Contains(body.Why, body.Best.ID+": ") || !strings.Contains(body.Why, "tyo draining") {
		t.Errorf("why: %q", body.Why)
	}
	last := body.Candidates[2]
	if last["node"] != "tyo" || last["excluded"] != geo.ExcludedDraining {
		t.Fatalf("excluded candidate not last: %v", last)
	}
	for _, k := range []string{"distance_km", "model_rtt_ms", "rtt_ms", "load_penalty_ms", "expected_ms"} {
		if _, ok := body.Candidates[0][k]; !ok {
			t.Errorf("candidate lacks %s: %v", k, body.Candidates[0])
		}
	}
	for _, q := range []string{"", "?ip=", "?ip=banana", "?ip=1.2.3.4.5"} {
		if r := get(t, srv.URL+"/geo/decide"+q, netipZero, nil); r.code != http.StatusBadRequest || !strings.Contains(r.body, "error") {
			t.Errorf("%q: %d %q", q, r.code, r.body)
		}
	}
}

func TestConfigFromYAMLValidates(t *testing.T) {
	var c geo.Config
	src := `
database: geo/testdata/city.mmdb
trusted_proxies: ["10.0.0.0/8", "192.0.2.7"]
dns: {listen: "127.0.0.1:5353", names: ["edge.example.net."], ttl: 20s}
`
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.DNS.TTL.Seconds() != 20 || c.DNS.Names[0] != "edge.example.net." {
		t.Fatalf("%+v", c)
	}
	rc, err := c.RouterConfig()
	if err != nil || len(rc.Trusted) != 2 || rc.Trusted[1].Bits() != 32 {
		t.Fatalf("%+v %v", rc, err)
	}
	bad := geo.Config{
		TrustedProxies: []string{"10.0.0.0/99"},
		RedirectCode:   302,
		DNS:            geo.DNSConfig{Listen: "localhost", Names: []string{"edge.example.net"}, TTL: -1, Answers: 99},
	}
	err = bad.Validate()
	for _, want := range []string{"trusted_proxies", "redirect_code", "listen", "fully qualified", "ttl", "answers"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if err := (geo.Config{DNS: geo.DNSConfig{Listen: "127.0.0.1:53"}}).Validate(); err == nil || !strings.Contains(err.Error(), "at least one name") {
		t.Errorf("dns without names: %v", err)
	}
}

func TestCheckDatabaseCatchesWhatServeWouldRefuse(t *testing.T) {
	if err := (geo.Config{}).CheckDatabase(); err != nil {
		t.Errorf("no database configured: %v", err)
	}
	good := filepath.Join(t.TempDir(), "city.mmdb")
	if err := demodb.Write(good); err != nil {
		t.Fatal(err)
	}
	if err := (geo.Config{Database: good}).CheckDatabase(); err != nil {
		t.Errorf("good database: %v", err)
	}
	b, _ := os.ReadFile(good)
	short := filepath.Join(t.TempDir(), "short.mmdb")
	os.WriteFile(short, b[:len(b)*2/3], 0o644)
	if _, err := geoip.Open(short, nil); err == nil {
		t.Fatal("test premise: serve opens the truncated file")
	}
	if err := (geo.Config{Database: short}).CheckDatabase(); err == nil {
		t.Error("truncated database passed the check")
	}
}

// A caller the node could not resolve (a client's own Forwarded beside
// the trusted proxy's X-Forwarded-For) is not shown the trusted hop it hid
// behind as its address: that would hand out a balancer's internal one.
func TestNodesAPIShowsNoTrustedHopAsTheCaller(t *testing.T) {
	rt := geo.NewRouter(geo.RouterConfig{Trusted: loopback}, openDemo(t), threeNodes("fra"), nil)
	srv := httptest.NewServer(rt.NodesHandler())
	defer srv.Close()
	r := get(t, srv.URL+geo.NodesPath, demodb.Tokyo.Client(), http.Header{"Forwarded": {"for=" + demodb.Virginia.Client().String()}})
	var body struct{ Client string }
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || r.code != http.StatusOK {
		t.Fatalf("%d %q %v", r.code, r.body, err)
	}
	if body.Client != "" {
		t.Fatalf("the caller was told its address is %q, want none", body.Client)
	}
}
