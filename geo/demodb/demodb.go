// Package demodb writes a small GeoLite2-City-shaped database placing a few
// networks in well-known cities, for tests, benchmarks and the local demo.
// The networks are arbitrary public ranges: the data is made up.
package demodb

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// City is one place in the demo database.
type City struct {
	Name     string
	Country  string
	Lat, Lon float64
	Networks []netip.Prefix
}

// Client returns an address inside the city's first network.
func (c City) Client() netip.Addr {
	return c.Networks[0].Addr().Next().Next()
}

// The demo cities. Tests look them up by name.
var (
	Tokyo     = City{"Tokyo", "JP", 35.6895, 139.6917, prefixes("1.0.16.0/20", "2400:4000::/24")}
	Frankfurt = City{"Frankfurt", "DE", 50.1109, 8.6821, prefixes("85.214.0.0/16", "2a01:4f8::/32")}
	Virginia  = City{"Ashburn", "US", 39.0438, -77.4874, prefixes("3.80.0.0/12", "2600:1f18::/32")}
	SaoPaulo  = City{"São Paulo", "BR", -23.5505, -46.6333, prefixes("177.10.0.0/16")}
	Sydney    = City{"Sydney", "AU", -33.8688, 151.2093, prefixes("1.120.0.0/16")}
	London    = City{"London", "GB", 51.5074, -0.1278, prefixes("81.2.69.0/24")}
	Singapore = City{"Singapore", "SG", 1.3521, 103.8198, prefixes("103.6.84.0/22")}
	Cities    = []City{Tokyo, Frankfurt, Virginia, SaoPaulo, Sydney, London, Singapore}
)

// Johannesburg has clients but no node in the demo fleets: the city the map
// sends to São Paulo and measured paths send to Frankfurt.
var Johannesburg = City{"Johannesburg", "ZA", -26.2041, 28.0473, prefixes("102.65.0.0/16")}

// CountryOnly is a network with a country but no coordinates, as in a
// Country database or a country-level City entry.
var CountryOnly = netip.MustParsePrefix("5.44.0.0/16")

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

// Write writes the database to path, atomically: readers watching the path
// see either the old file or the complete new one.
func Write(path string) error {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType: "GeoLite2-City",
		Description:  map[string]string{"en": "Perigee demo city database (made-up data)"},
		Languages:    []string{"en"},
		RecordSize:   28,
	})
	if err != nil {
		return fmt.Errorf("demodb: %w", err)
	}
	for _, c := range append([]City{Johannesburg}, Cities...) {
		rec := mmdbtype.Map{
			"city":     mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(c.Name)}},
			"country":  mmdbtype.Map{"iso_code": mmdbtype.String(c.Country)},
			"location": mmdbtype.Map{"latitude": mmdbtype.Float64(c.Lat), "longitude": mmdbtype.Float64(c.Lon)},
		}
		for _, p := range c.Networks {
			if err := tree.Insert(ipNet(p), rec); err != nil {
				return fmt.Errorf("demodb: insert %s: %w", p, err)
			}
		}
	}
	if err := tree.Insert(ipNet(CountryOnly), mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String("DE")}}); err != nil {
		return fmt.Errorf("demodb: insert %s: %w", CountryOnly, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".demodb-*")
	if err != nil {
		return fmt.Errorf("demodb: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tree.WriteTo(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("demodb: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("demodb: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("demodb: %w", err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
