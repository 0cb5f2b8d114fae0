package geo

import (
	"encoding/json"
	"net/http"
	"net/netip"

	"perigee/geo/geoip"
)

// NodesPath is where NodesHandler is meant to be mounted.
const NodesPath = "/.well-known/perigee/nodes"

// rankedNode is one entry of the nodes API.
type rankedNode struct {
	ID         string  `json:"id"`
	Region     string  `json:"region,omitempty"`
	URL        string  `json:"url,omitempty"`
	ExpectedMs float64 `json:"expected_ms"`
	Self       bool    `json:"self,omitempty"`
}

// NodesHandler serves the nodes able to take the caller, best first, for
// SDKs and health tooling that choose before they connect.
func (rt *Router) NodesHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		c := rt.client(r)
		client := c.Addr
		d := rt.Decide(client)
		if !c.Known {
			client = netip.Addr{} // not the trusted hop the caller hid behind
		}
		rt.Count("nodes-api", d.Reason)
		self := rt.fleet.Self().ID
		// The chosen node leads even when stickiness kept it over a
		// slightly faster one, so clients and redirects agree.
		nodes := []rankedNode{}
		add := func(s Score) {
			nodes = append(nodes, rankedNode{ID: s.Node, Region: s.Region, URL: s.URL, ExpectedMs: ms(s), Self: s.Node == self})
		}
		if i := byIDPos(d.Candidates, d.Best.ID); i >= 0 && d.Candidates[i].Excluded == "" {
			add(d.Candidates[i])
		}
		for _, s := range d.Candidates {
			if s.Excluded == "" && s.Node != d.Best.ID {
				add(s)
			}
		}
		w.Header().Set("Cache-Control", "private, max-age=10")
		writeJSON(w, http.StatusOK, struct {
			Client netip.Addr   `json:"client"`
			Reason Reason       `json:"reason"`
			Nodes  []rankedNode `json:"nodes"`
		}{client, d.Reason, nodes})
	})
}

func ms(s Score) float64 { return float64(s.Expected.Microseconds()) / 1000 }

// ExplainHandler serves the admin API's GET /geo/decide?ip=…: the decision
// for that address with every candidate's score. It does not change the
// answer remembered for the address's network.
func (rt *Router) ExplainHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		ip, err := netip.ParseAddr(r.URL.Query().Get("ip"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "ip: want an IPv4 or IPv6 address"})
			return
		}
		d := rt.Explain(ip)
		writeJSON(w, http.StatusOK, struct {
			Decision
			Database geoip.Info `json:"database"`
		}{d, rt.db.Info()})
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
