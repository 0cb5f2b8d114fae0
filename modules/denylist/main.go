//go:build wasip1

// Command denylist refuses requests by client country or address. The
// country comes from a header the node sets from its GeoIP lookup; the
// address is the connection's. Its config is JSON:
//
//	{"countries": ["KP", "IR"], "networks": ["203.0.113.0/24", "2001:db8::/32"],
//	 "country_header": "x-perigee-country"}
//
// country_header defaults to x-perigee-country. Denied requests get 403.
package main

import (
	"encoding/json"
	"net/netip"
	"strings"

	"perigee/modules/sdk"
)

type config struct {
	Countries     []string `json:"countries"`
	Networks      []string `json:"networks"`
	CountryHeader string   `json:"country_header"`
}

func init() {
	var cfg config
	if err := json.Unmarshal(sdk.Config(), &cfg); err != nil {
		sdk.Log(sdk.LevelError, "denylist: config is not JSON: "+err.Error())
	}
	if cfg.CountryHeader == "" {
		cfg.CountryHeader = "x-perigee-country"
	}
	countries := map[string]bool{}
	for _, c := range cfg.Countries {
		countries[strings.ToUpper(c)] = true
	}
	var networks []netip.Prefix
	for _, n := range cfg.Networks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			sdk.Log(sdk.LevelError, "denylist: bad network "+n)
			continue
		}
		networks = append(networks, p.Masked())
	}
	sdk.HandleRequest(func(req sdk.Request, resp sdk.Response) sdk.Action {
		country, _ := req.Headers().Get(cfg.CountryHeader)
		denied := countries[strings.ToUpper(strings.TrimSpace(country))]
		if addr, err := netip.ParseAddrPort(req.SourceAddr()); err == nil && !denied {
			ip := addr.Addr().Unmap()
			for _, p := range networks {
				if p.Contains(ip) {
					denied = true
					break
				}
			}
		}
		if denied {
			resp.SetStatusCode(403)
			resp.Body().WriteString("access from your location is not allowed\n")
			return sdk.Stop
		}
		return sdk.Continue
	})
}

func main() {}
