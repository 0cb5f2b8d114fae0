package geo_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"perigee/geo"
	"perigee/geo/geoip"
	"perigee/geo/geolitedb"
	"perigee/geo/latency"
)

// heldOut is a list of real addresses on every inhabited continent, kept
// apart from the model: its constants were set before the list was run
// against it, and nothing in it was changed to fit. Each is inside a network its holder
// is publicly registered for (university and national research networks,
// national carriers, registries; the holder named is the registrant in the
// RIR's records as commonly published), and names the measured metro its
// traffic reaches the world through: the nearest one in metros.csv, or,
// where there is none nearby, the one its cables or transit lead to (said
// in the note). The expected node is then read off the measured matrix
// alone — the fleet node whose metro has the lowest median round trip from
// that metro — so the expectation does not depend on the interpolation the
// router does.
var heldOut = []struct {
	addr, country, holder, via, note string
}{
	// Africa
	{"146.141.1.1", "ZA", "University of the Witwatersrand, 146.141.0.0/16", "southafricanorth", ""},
	{"137.215.1.1", "ZA", "University of Pretoria, 137.215.0.0/16", "southafricanorth", ""},
	{"146.232.1.1", "ZA", "Stellenbosch University, 146.232.0.0/16", "southafricawest", ""},
	{"137.158.1.1", "ZA", "University of Cape Town, 137.158.0.0/16", "southafricawest", "country-level record"},
	{"2001:4200::1", "ZA", "AFRINIC's IPv6 block 2001:4200::/23", "southafricanorth", "country-level record"},
	{"168.167.1.1", "BW", "Botswana Telecommunications, 168.167.0.0/16", "southafricanorth", "overland through South Africa"},
	{"41.182.1.1", "NA", "Telecom Namibia, 41.182.0.0/16", "southafricawest", "overland through South Africa"},
	{"197.210.1.1", "NG", "MTN Nigeria, 197.210.0.0/16", "uksouth", "WACS, MainOne and SAT-3 run to Europe"},
	{"105.112.1.1", "NG", "Airtel Nigeria, 105.112.0.0/12", "uksouth", "country-level record"},
	{"41.82.1.1", "SN", "Sonatel, 41.82.0.0/15", "francesouth", "ACE and SAT-3 run to Europe"},
	{"41.32.1.1", "EG", "TE Data, 41.32.0.0/12", "francesouth", "cables to Marseille"},
	{"196.188.1.1", "ET", "Ethio Telecom, 196.188.0.0/14", "francesouth", "via Djibouti's cables to Marseille"},
	{"197.136.1.1", "KE", "KENET, 197.136.0.0/16", "francesouth", "SEACOM and TEAMS run to Marseille"},
	{"41.248.1.1", "MA", "Maroc Telecom, 41.248.0.0/13", "francesouth", ""},
	{"41.96.1.1", "DZ", "Algérie Télécom, 41.96.0.0/12", "francesouth", ""},
	{"197.0.1.1", "TN", "Tunisie Telecom, 197.0.0.0/16", "francesouth", ""},
	// South America
	{"143.107.1.1", "BR", "Universidade de São Paulo, 143.107.0.0/16", "brazilsouth", ""},
	{"143.106.1.1", "BR", "UNICAMP, 143.106.0.0/16", "brazilsouth", ""},
	{"146.164.1.1", "BR", "UFRJ, 146.164.0.0/16", "brazilsouth", ""},
	{"2001:12ff::1", "BR", "NIC.br, 2001:12ff::/32", "brazilsouth", "country-level record"},
	{"157.92.1.1", "AR", "Universidad de Buenos Aires, 157.92.0.0/16", "brazilsouth", "cables and fibre to São Paulo"},
	{"164.73.1.1", "UY", "Universidad de la República, 164.73.0.0/16", "brazilsouth", ""},
	{"146.83.1.1", "CL", "REUNA, 146.83.0.0/16", "brazilsouth", "country-level record; fibre over the Andes"},
	{"157.253.1.1", "CO", "Universidad de los Andes, 157.253.0.0/16", "eastus", "Colombia's transit meets the world in Miami"},
	// North America
	{"128.100.1.1", "CA", "University of Toronto, 128.100.0.0/16", "canadacentral", ""},
	{"142.103.1.1", "CA", "University of British Columbia, 142.103.0.0/16", "westus2", ""},
	{"171.64.1.1", "US", "Stanford University, 171.64.0.0/14", "westus", ""},
	{"128.32.1.1", "US", "UC Berkeley, 128.32.0.0/16", "westus", ""},
	{"128.95.1.1", "US", "University of Washington, 128.95.0.0/16", "westus2", ""},
	{"128.83.1.1", "US", "University of Texas at Austin, 128.83.0.0/16", "southcentralus", ""},
	{"128.30.1.1", "US", "MIT, 128.30.0.0/15", "eastus", ""},
	{"128.112.1.1", "US", "Princeton University, 128.112.0.0/16", "eastus", ""},
	{"73.1.1.1", "US", "Comcast, 73.0.0.0/8", "eastus", ""},
	{"8.8.8.8", "US", "Google Public DNS (anycast), 8.8.8.0/24", "southcentralus", "country-level record"},
	{"132.248.1.1", "MX", "UNAM, 132.248.0.0/16", "southcentralus", "transit through Texas"},
	// Europe
	{"131.111.1.1", "GB", "University of Cambridge, 131.111.0.0/16", "uksouth", ""},
	{"129.67.1.1", "GB", "University of Oxford, 129.67.0.0/16", "uksouth", ""},
	{"129.132.1.1", "CH", "ETH Zürich, 129.132.0.0/16", "germanywestcentral", ""},
	{"129.187.1.1", "DE", "Leibniz-Rechenzentrum Munich, 129.187.0.0/16", "germanywestcentral", ""},
	{"2a00:1450:4001:800::1", "DE", "Google Frankfurt, 2a00:1450:4001::/48", "germanywestcentral", ""},
	{"130.237.1.1", "SE", "KTH Royal Institute of Technology, 130.237.0.0/16", "swedencentral", ""},
	{"128.214.1.1", "FI", "FUNET, 128.214.0.0/16", "swedencentral", ""},
	{"130.208.1.1", "IS", "University of Iceland, 130.208.0.0/16", "northeurope", "cables to Ireland and the UK"},
	{"195.113.1.1", "CZ", "CESNET, 195.113.0.0/16", "germanywestcentral", ""},
	{"147.102.1.1", "GR", "National Technical University of Athens, 147.102.0.0/16", "italynorth", ""},
	{"147.96.1.1", "ES", "Universidad Complutense de Madrid, 147.96.0.0/16", "francesouth", ""},
	{"193.136.1.1", "PT", "FCCN, 193.136.0.0/15", "francesouth", ""},
	{"193.0.10.1", "NL", "RIPE NCC, 193.0.0.0/21", "westeurope", ""},
	{"2001:610::1", "NL", "SURF, 2001:610::/32", "westeurope", ""},
	{"158.250.1.1", "RU", "Moscow State University, 158.250.0.0/16", "swedencentral", "country-level record; Moscow's transit runs west"},
	{"160.75.1.1", "TR", "Istanbul Technical University, 160.75.0.0/16", "germanywestcentral", ""},
	// Middle East
	{"132.66.1.1", "IL", "Tel Aviv University, 132.66.0.0/16", "israelcentral", ""},
	{"132.64.1.1", "IL", "Hebrew University of Jerusalem, 132.64.0.0/16", "israelcentral", ""},
	{"94.200.1.1", "AE", "Emirates Telecommunications (Etisalat), 94.200.0.0/13", "uaenorth", ""},
	{"194.225.1.1", "IR", "IPM / IRANET, 194.225.0.0/16", "uaenorth", "country-level record; Gulf cables"},
	// Asia
	{"133.11.1.1", "JP", "University of Tokyo, 133.11.0.0/16", "japaneast", ""},
	{"130.54.1.1", "JP", "Kyoto University, 130.54.0.0/16", "japanwest", ""},
	{"2001:200::1", "JP", "WIDE Project, 2001:200::/32", "japaneast", "country-level record"},
	{"147.46.1.1", "KR", "Seoul National University, 147.46.0.0/16", "koreacentral", ""},
	{"166.104.1.1", "KR", "Hanyang University, 166.104.0.0/16", "koreacentral", ""},
	{"140.112.1.1", "TW", "National Taiwan University, 140.112.0.0/16", "eastasia", ""},
	{"137.189.1.1", "HK", "Chinese University of Hong Kong, 137.189.0.0/16", "eastasia", ""},
	{"202.120.1.1", "CN", "Shanghai Jiao Tong University (CERNET), 202.120.0.0/15", "eastasia", ""},
	{"166.111.1.1", "CN", "Tsinghua University (CERNET), 166.111.0.0/16", "eastasia", "country-level record"},
	{"2001:da8::1", "CN", "CERNET, 2001:da8::/32", "eastasia", "country-level record"},
	{"137.132.1.1", "SG", "National University of Singapore, 137.132.0.0/16", "southeastasia", ""},
	{"161.200.1.1", "TH", "Chulalongkorn University, 161.200.0.0/16", "southeastasia", ""},
	{"167.205.1.1", "ID", "Institut Teknologi Bandung, 167.205.0.0/16", "southeastasia", ""},
	{"49.36.1.1", "IN", "Reliance Jio, 49.36.0.0/14", "westindia", ""},
	{"117.192.1.1", "IN", "BSNL, 117.192.0.0/10", "southindia", ""},
	{"14.139.1.1", "IN", "National Knowledge Network, 14.139.0.0/16", "centralindia", "country-level record"},
	{"192.248.1.1", "LK", "LEARN Sri Lanka, 192.248.0.0/17", "southindia", "cables to Chennai and Singapore"},
	{"182.176.1.1", "PK", "Pakistan Telecommunication Company, 182.176.0.0/12", "uaenorth", "Karachi's cables run to the Gulf and Europe"},
	// Oceania
	{"129.78.1.1", "AU", "University of Sydney, 129.78.0.0/16", "australiaeast", ""},
	{"128.250.1.1", "AU", "University of Melbourne, 128.250.0.0/16", "australiasoutheast", ""},
	{"130.102.1.1", "AU", "University of Queensland, 130.102.0.0/16", "australiaeast", ""},
	{"2001:dc0::1", "AU", "APNIC, 2001:dc0::/32", "australiaeast", "country-level record"},
	{"130.216.1.1", "NZ", "University of Auckland, 130.216.0.0/16", "australiaeast", "cables to Sydney"},
	{"132.181.1.1", "NZ", "University of Canterbury, 132.181.0.0/16", "australiaeast", "cables to Sydney"},
}

// issueFleet is the static fleet of issue 18, each node at its metro.
var issueFleet = []struct {
	id, metro string
	lat, lon  float64
}{
	{"fra", "germanywestcentral", 50.11, 8.68},
	{"iad", "eastus", 39.04, -77.49},
	{"tyo", "japaneast", 35.68, 139.69},
	{"gru", "brazilsouth", -23.55, -46.63},
}

func openGeoLite(t *testing.T) *geoip.DB {
	t.Helper()
	path, err := geolitedb.Path()
	if errors.Is(err, geolitedb.ErrMissing) {
		t.Skipf("needs the real database: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	db, err := geoip.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func metroIndex(t *testing.T, id string) int {
	for i, m := range latency.Measured.Metros() {
		if m.ID == id {
			return i
		}
	}
	t.Fatalf("no metro %q", id)
	return -1
}

// expectedNode reads the held-out answer off the matrix alone.
func expectedNode(t *testing.T, via string) string {
	from := metroIndex(t, via)
	best, bestMs := "", 0.0
	for _, n := range issueFleet {
		if ms := latency.Measured.RTTms(from, metroIndex(t, n.metro)); best == "" || ms < bestMs {
			best, bestMs = n.id, ms
		}
	}
	return best
}

func TestHeldOutAddressesAgainstRealDatabase(t *testing.T) {
	db := openGeoLite(t)
	var nodes []geo.Node
	for _, n := range issueFleet {
		nodes = append(nodes, geo.Node{ID: n.id, Region: n.metro, Lat: n.lat, Lon: n.lon, Alive: true, PublicURL: "https://" + n.id + ".example.net"})
	}
	rt := geo.NewRouter(geo.RouterConfig{}, db, mustFleet("fra", nodes...), nil)
	used := map[string]bool{}
	right := 0
	for _, c := range heldOut {
		d := rt.Explain(netip.MustParseAddr(c.addr))
		if d.Location.Country != c.country {
			t.Errorf("%s (%s): the database says %q: fix the list", c.addr, c.holder, d.Location.Country)
		}
		if !d.Location.Known || d.Placement == nil || !strings.Contains(d.Why, d.Best.ID+": ") {
			t.Errorf("%s: decision does not say why: %+v %q", c.addr, d.Placement, d.Why)
		}
		want := expectedNode(t, c.via)
		if d.Best.ID == want {
			right++
		} else {
			t.Logf("miss: %s %s (%s, via %s): got %s, want %s — %s", c.addr, c.country, c.holder, c.via, d.Best.ID, want, d.Why)
		}
		used[want] = true
	}
	share := float64(right) / float64(len(heldOut))
	t.Logf("held-out list: %d of %d decisions right (%.1f%%)", right, len(heldOut), 100*share)
	if share < 0.95 {
		t.Errorf("%.1f%% right, want at least 95%%", 100*share)
	}
	if len(used) != len(issueFleet) {
		t.Errorf("the list expects only %d of the fleet's nodes", len(used))
	}
}
