//go:build wasip1

// Command denylist refuses requests by client country or address. The
// country comes from a header the node sets from its GeoIP lookup. The
// networks are matched against the client the node resolved, X-Real-IP
// (behind a trusted proxy, the client rather than the proxy), and against
// the connection's peer: a match of either denies. Its config is JSON:
//
//	{"countries": ["KP", "IR"], "networks": ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"],
//	 "country_header": "x-perigee-country"}
//
// Countries are two-letter ISO 3166-1 codes, in any case. A network is a
// prefix or a bare address; IPv4-mapped ones (::ffff:203.0.113.0/120)
// stand for their IPv4 form, and a client's zone (fe80::1%eth0) is
// ignored. A country or a network that does not parse stops the module
// from loading. country_header defaults to x-perigee-country. Denied
// requests get 403.
package main

import (
	"errors"
	"net/netip"
	"strings"

	"perigee/modules/internal/guestconfig"
	"perigee/modules/sdk"
)

type config struct {
	Countries     []string `json:"countries"`
	Networks      []string `json:"networks"`
	CountryHeader string   `json:"country_header"`
}

func init() {
	var cfg config
	if err := guestconfig.Decode(sdk.Config(), &cfg); err != nil {
		sdk.RefuseToLoad("denylist: config is not JSON of countries, networks and country_header: " + err.Error())
	}
	var err error
	if cfg.CountryHeader, err = guestconfig.HeaderName("country_header", cfg.CountryHeader, "x-perigee-country"); err != nil {
		sdk.RefuseToLoad("denylist: " + err.Error())
	}
	countries := map[string]bool{}
	for _, c := range cfg.Countries {
		code := strings.ToUpper(strings.TrimSpace(c))
		if len(code) != 2 || strings.Trim(code, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
			sdk.RefuseToLoad("denylist: bad country " + c + ": not a two-letter ISO 3166-1 code")
		}
		countries[code] = true
	}
	var networks []netip.Prefix
	for _, n := range cfg.Networks {
		p, err := parseNetwork(n)
		if err != nil {
			sdk.RefuseToLoad("denylist: bad network " + n + ": " + err.Error())
		}
		networks = append(networks, p)
	}
	sdk.HandleRequest(func(req sdk.Request, resp sdk.Response) sdk.Action {
		country, _ := req.Headers().Get(cfg.CountryHeader)
		denied := countries[strings.ToUpper(strings.TrimSpace(country))]
		if !denied && len(networks) > 0 {
			realIP, _ := req.Headers().Get("x-real-ip")
			denied = inAny(networks, realIP) || inAny(networks, req.SourceAddr())
		}
		if denied {
			resp.SetStatusCode(403)
			resp.Body().WriteString("access from your location is not allowed\n")
			return sdk.Stop
		}
		return sdk.Continue
	})
}

// parseNetwork reads a prefix or a bare address, in the form Contains
// compares: masked, IPv4-mapped as IPv4.
func parseNetwork(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, errors.New("not an address or a prefix")
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, errors.New("an IPv4-mapped prefix shorter than /96 spans more than IPv4")
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// inAny reports whether addr, an address with or without a port, is in one
// of networks. A zone is dropped: Contains never matches a zoned address.
func inAny(networks []netip.Prefix, addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		ap, perr := netip.ParseAddrPort(addr)
		if perr != nil {
			return false
		}
		a = ap.Addr()
	}
	a = a.WithZone("").Unmap()
	for _, p := range networks {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func main() {}
