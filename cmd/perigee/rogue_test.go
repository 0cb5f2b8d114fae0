package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// An unkeyed mesh on a public bind is refused before anything starts: a
// gossip port open to the network must not admit any process that reaches it.
func TestValidateRefusesAnUnkeyedPublicMesh(t *testing.T) {
	path := writeConfig(t, `listen: {https: "127.0.0.1:0", admin: "127.0.0.1:0"}
services:
  api: {backends: [{url: "http://127.0.0.1:9"}]}
routes:
  - {match: {path_prefix: /}, service: api}
mesh: {bind: "0.0.0.0:7946"}
`)
	code, out := perigee(t, "validate", "--config", path)
	if code == 0 || !strings.Contains(out, "mesh.keyring") {
		t.Fatalf("an unkeyed mesh on 0.0.0.0 was accepted: exit %d: %s", code, out)
	}
}

// Three keyed nodes of one region, and a rogue process that knows their
// gossip address but not their key, named to sort first so that it would
// lead under a lowest-id rule, and advertising a URL of its own. It never
// becomes a member, never leads, and no client is ever steered to it.
func TestRogueNodeWithoutTheKeyCannotJoinOrLead(t *testing.T) {
	dir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)
	keyring := filepath.Join(dir, "mesh.keys")
	if err := os.WriteFile(keyring, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type node struct{ id, host, https, admin, gossip, keyring string }
	var nodes []node
	for i, id := range []string{"n1", "n2", "n3", "0rogue"} {
		host := fmt.Sprintf("127.0.0.%d", 31+i)
		n := node{id, host, freePort(t, host), freePort(t, host), freePort(t, host), ""}
		if id != "0rogue" {
			n.keyring = "keyring: " + keyring
		}
		nodes = append(nodes, n)
	}
	be := backendAddr(t)
	for _, n := range nodes {
		url := fmt.Sprintf("https://%s:%s", n.host, n.https)
		if n.id == "0rogue" {
			url = "https://evil.example.net"
		}
		serveChild(t, writeConfig(t, fmt.Sprintf(`node: {id: %s, region: test, location: {lat: 50.1, lon: 8.7}, public_url: %q}
listen: {https: "%s:%s", admin: "%s:%s"}
services:
  api: {backends: [{url: "http://%s"}]}
routes:
  - {match: {path_prefix: /}, service: api}
mesh:
  bind: "%s:%s"
  join: ["%s:%s"]
  %s
`, n.id, url, n.host, n.https, n.host, n.admin, be, n.host, n.gossip, nodes[0].host, nodes[0].gossip, n.keyring)))
	}
	getJSON := func(n node, path string, v any) bool {
		resp, err := http.Get(fmt.Sprintf("http://%s:%s%s", n.host, n.admin, path))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(v) == nil
	}
	members := func(n node) map[string]string {
		var ms []struct{ ID, State string }
		out := map[string]string{}
		if getJSON(n, "/members", &ms) {
			for _, m := range ms {
				out[m.ID] = m.State
			}
		}
		return out
	}
	leader := func(n node) string {
		var regions []struct{ Name, Leader string }
		if getJSON(n, "/regions", &regions) && len(regions) == 1 {
			return regions[0].Leader
		}
		return ""
	}
	keyed := nodes[:3]
	eventually(t, "the keyed nodes see each other and agree on a leader", func() bool {
		first := leader(keyed[0])
		for _, n := range keyed {
			s := members(n)
			if s["n1"] != "alive" || s["n2"] != "alive" || s["n3"] != "alive" || leader(n) == "" || leader(n) != first {
				return false
			}
		}
		return true
	})
	// The rogue keeps trying to join for as long as we watch.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		for _, n := range keyed {
			if _, ok := members(n)["0rogue"]; ok {
				t.Fatalf("%s lists the rogue as a member", n.id)
			}
			if l := leader(n); l == "0rogue" {
				t.Fatalf("%s follows the rogue as leader", n.id)
			}
			var d struct{ Best struct{ ID, URL string } }
			if getJSON(n, "/geo/decide?ip=85.214.0.1", &d) && (d.Best.ID == "0rogue" || strings.Contains(d.Best.URL, "evil")) {
				t.Fatalf("%s steers clients to the rogue: %+v", n.id, d.Best)
			}
		}
	}
}
