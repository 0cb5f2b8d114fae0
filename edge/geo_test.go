package edge

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"perigee/geo/demodb"
	"perigee/telemetry"
)

// A node in Frankfurt with peers in Tokyo and Virginia: clients are sent to
// their nearest node, the caller's ranking is on the data plane, and the
// admin API explains a choice.
func TestGeoSteersClientsToTheirNearestNode(t *testing.T) {
	db := demoDB(t)
	yaml := nodeYAML("round_robin", serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", "fra-app")
		json.NewEncoder(w).Encode(r.Header)
	}))) + fmt.Sprintf(`node:
  id: fra-1
  region: eu-central
  location: {lat: 50.11, lon: 8.68}
  public_url: https://fra-1.example.net
geo:
  database: %q
  trusted_proxies: ["127.0.0.0/8"]
  nodes:
    - {id: tyo-1, region: ap-northeast, location: {lat: 35.68, lon: 139.69}, public_url: "https://tyo-1.example.net"}
    - {id: iad-1, region: us-east, location: {lat: 39.04, lon: -77.49}, public_url: "https://iad-1.example.net"}
`, db)
	yaml = strings.Replace(yaml, "service: api}", "service: api, steer: redirect}", 1)
	n := startNode(t, yaml)
	sampler := n.metrics.NewSampler("n", "r", n.services)
	c := h1Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	base := "https://" + n.Addrs().HTTPS
	for client, want := range map[string]string{
		"1.0.16.1":     "https://tyo-1.example.net/app?x=1",
		"3.80.0.1":     "https://iad-1.example.net/app?x=1",
		"85.214.0.1":   "", // Frankfurt: served here
		"192.168.1.20": "", // private: served here
	} {
		resp, _ := get(t, c, base+"/app?x=1", "X-Forwarded-For", client)
		if want == "" {
			if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "fra-app" {
				t.Errorf("client %s: %d, want served here", client, resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != 307 || resp.Header.Get("Location") != want {
			t.Errorf("client %s: %d to %q, want 307 to %q", client, resp.StatusCode, resp.Header.Get("Location"), want)
		}
	}
	// The telemetry sample tells the redirects from the load: the two 307s
	// are 3xx of the service and of the node, and a request refused before
	// any route (a 400 for its path) is the node's 4xx, in no service.
	if resp, _ := get(t, c, base+"/a;b"); resp.StatusCode != 400 {
		t.Fatalf("a target with a parameter: %d, want 400", resp.StatusCode)
	}
	waitFor(t, "the node to finish its requests", func() bool { return n.metrics.InFlight() == 0 })
	smp := sampler.Sample(time.Now())
	if got, want := smp.Services["api"].Status, (telemetry.StatusClasses{0, 2, 2, 0, 0}); got != want {
		t.Errorf("the service's responses by class: %v, want %v", got, want)
	}
	if got, want := smp.Status, (telemetry.StatusClasses{0, 2, 2, 1, 0}); got != want {
		t.Errorf("the node's responses by class: %v, want %v", got, want)
	}
	// What policies scale on is the service's own load: the redirects
	// never reached its backends, so they are not in its requests or its
	// latency (a redirect's microseconds would pull its p99 down).
	if api := smp.Services["api"]; api.Latency.Count() != 2 {
		t.Errorf("the service's latency holds %d requests, want the 2 it served", api.Latency.Count())
	}

	// The node tags the client's country for transforms and drops a forged one.
	var seen http.Header
	_, body := get(t, c, base+"/app", "X-Forwarded-For", "85.214.0.1", "X-Perigee-Country", "XX")
	if json.Unmarshal([]byte(body), &seen); seen.Get("X-Perigee-Country") != "DE" {
		t.Errorf("backend saw country %q, want DE", seen.Get("X-Perigee-Country"))
	}
	resp, body := get(t, c, base+"/.well-known/perigee/nodes", "X-Forwarded-For", "1.0.16.1")
	if resp.StatusCode != 200 || !strings.Contains(body, "tyo-1") {
		t.Fatalf("nodes API: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, c, "http://"+n.Addrs().Admin+"/geo/decide?ip=3.80.0.1")
	var explain map[string]any
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &explain) != nil || !strings.Contains(body, "iad-1") {
		t.Fatalf("explain: %d %s", resp.StatusCode, body)
	}
}

func TestGeoConfigErrorsNameTheFile(t *testing.T) {
	yaml := nodeYAML("round_robin", backend(t, "a")) + "geo:\n  database: /nonexistent/city.mmdb\n"
	path := filepath.Join(t.TempDir(), "node.yaml")
	writeFile(t, path, yaml)
	n, err := newFromFile(path)
	if err == nil {
		n.Shutdown(t.Context())
		t.Fatal("a missing GeoIP database was accepted")
	}
	if !strings.Contains(err.Error(), "node.yaml:") || !strings.Contains(err.Error(), "city.mmdb") {
		t.Fatalf("error %q should name the config line and the database", err)
	}
}

// demoDB writes the demo GeoIP database (geo/geoip/demodb) for a test's
// node and returns its path.
func demoDB(t *testing.T) string {
	t.Helper()
	db := filepath.Join(t.TempDir(), "city.mmdb")
	if err := demodb.Write(db); err != nil {
		t.Fatal(err)
	}
	return db
}

// A client behind a trusted proxy whose forwarding headers cannot say who
// it is (Forwarded and X-Forwarded-For naming different clients, which a
// client can arrange by sending the one its proxy does not write; a hop
// that does not parse) was tagged with the country of the last trusted
// hop: a proxy's, so that a client could step out of a country deny list
// by confusing the headers. It is tagged XX, the code for "unknown", which
// a deny list can name.
func TestClientTheNodeCannotPlaceIsTaggedUnknown(t *testing.T) {
	yaml := nodeYAML("round_robin", serveBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Perigee-Country"))
	}))) + fmt.Sprintf("geo:\n  database: %q\n  trusted_proxies: [\"127.0.0.0/8\", \"85.214.0.0/16\"]\n", demoDB(t))
	n := startNode(t, yaml)
	base := "https://" + n.Addrs().HTTPS + "/"
	for _, c := range []struct {
		why  string
		hdr  []string
		want string
	}{
		{"a German proxy's Tokyo client", []string{"X-Forwarded-For", "1.0.16.1, 85.214.0.1"}, "JP"},
		{"a hop that does not parse behind the German proxy", []string{"X-Forwarded-For", "garbage, 85.214.0.1"}, "XX"},
		{"Forwarded and X-Forwarded-For naming two clients", []string{"X-Forwarded-For", "1.0.16.1, 85.214.0.1", "Forwarded", "for=3.80.0.1, for=85.214.0.1"}, "XX"},
	} {
		if _, body := get(t, h1Client(), base, c.hdr...); body != c.want {
			t.Errorf("%s: tagged %q, want %q", c.why, body, c.want)
		}
	}
}
