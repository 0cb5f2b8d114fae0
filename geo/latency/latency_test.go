package latency_test

import (
	"math"
	"strings"
	"testing"

	"perigee/geo/latency"
)

func TestMeasuredMatrixLoadsAndIsSymmetric(t *testing.T) {
	m := latency.Measured
	n := len(m.Metros())
	if n < 30 {
		t.Fatalf("%d metros", n)
	}
	for a := range n {
		for b := range n {
			v := m.RTTms(a, b)
			if a == b && v != 0 || a != b && (v <= 0 || v != m.RTTms(b, a)) {
				t.Fatalf("%s↔%s: %v", m.Metros()[a].ID, m.Metros()[b].ID, v)
			}
		}
	}
}

func place(lat, lon, radius float64) latency.Place {
	return latency.Measured.Place(lat, lon, radius)
}

// The cases the map alone gets wrong, with the fleet of the issue.
func TestMeasuredPathsBeatTheMap(t *testing.T) {
	m := latency.Measured
	fra, iad, gru := place(50.11, 8.68, 0), place(39.04, -77.49, 0), place(-23.55, -46.63, 0)
	jnb := place(-26.20, 28.05, 20)
	if f, s := m.BetweenMs(jnb, fra), m.BetweenMs(jnb, gru); f >= s {
		t.Errorf("Johannesburg: Frankfurt %.0f ms, São Paulo %.0f ms", f, s)
	}
	// Bogotá is nearer São Paulo than Virginia on the map only by a little,
	// and its paths run through Miami.
	bog := place(4.71, -74.07, 20)
	if v, s := m.BetweenMs(bog, iad), m.BetweenMs(bog, gru); v >= s {
		t.Errorf("Bogotá: Virginia %.0f ms, São Paulo %.0f ms", v, s)
	}
}

func TestPlaceWeights(t *testing.T) {
	m := latency.Measured
	// In Frankfurt: Frankfurt carries nearly all the weight.
	s := m.Shares(place(50.11, 8.68, 0))
	if len(s) != latency.K || s[0].Metro != "germanywestcentral" || s[0].Weight < 0.95 || s[0].Km > 1 {
		t.Errorf("Frankfurt: %+v", s)
	}
	// The same point known only to within 1000 km spreads over its metros.
	wide := m.Shares(place(50.11, 8.68, 1000))
	if wide[0].Weight > 0.5 {
		t.Errorf("wide radius still pinned: %+v", wide)
	}
	for _, p := range []latency.Place{place(0, 0, 0), place(89.9, 179.9, 5000), place(-89.9, -179.9, 0), place(35, 180, 0)} {
		var sum float64
		for _, sh := range m.Shares(p) {
			sum += sh.Weight
		}
		if math.Abs(sum-1) > 0.01 || math.IsNaN(p.AccessKm) {
			t.Errorf("weights sum to %v, access %v", sum, p.AccessKm)
		}
	}
	// Across the antimeridian: a point just east of it finds Tokyo and
	// Sydney as readily as one just west.
	if a, b := m.Shares(place(0, 179.9, 0)), m.Shares(place(0, -179.9, 0)); a[0].Metro != b[0].Metro {
		t.Errorf("antimeridian: %s vs %s", a[0].Metro, b[0].Metro)
	}
}

func TestLoadRejectsBadTables(t *testing.T) {
	metros := "id,city,country,lat,lon\na,A,AA,1,1\nb,B,BB,2,2\n"
	cases := map[string][2]string{
		"missing pair":   {metros, "source,destination,p50_ms\n"},
		"unknown metro":  {metros, "source,destination,p50_ms\na,c,10\n"},
		"bad figure":     {metros, "source,destination,p50_ms\na,b,-3\n"},
		"NaN figure":     {metros, "source,destination,p50_ms\na,b,NaN\n"},
		"huge figure":    {metros, "source,destination,p50_ms\na,b,1e308\n"},
		"NaN latitude":   {"id,city,country,lat,lon\na,A,AA,NaN,1\nb,B,BB,2,2\n", "source,destination,p50_ms\na,b,4\n"},
		"NaN longitude":  {"id,city,country,lat,lon\na,A,AA,1,nan\nb,B,BB,2,2\n", "source,destination,p50_ms\na,b,4\n"},
		"to itself":      {metros, "source,destination,p50_ms\na,a,3\na,b,4\n"},
		"bad coordinate": {"id,city,country,lat,lon\na,A,AA,91,1\nb,B,BB,2,2\n", "source,destination,p50_ms\na,b,4\n"},
		"repeated id":    {"id,city,country,lat,lon\na,A,AA,1,1\na,B,BB,2,2\n", "source,destination,p50_ms\na,b,4\n"},
		"short row":      {"id,city,country,lat,lon\na,A,1,1\n", ""},
		"no metros":      {"id,city,country,lat,lon\n", "source,destination,p50_ms\n"},
	}
	for name, c := range cases {
		if _, err := latency.Load(strings.NewReader(c[0]), strings.NewReader(c[1])); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	m, err := latency.Load(strings.NewReader(metros), strings.NewReader("# note\nsource,destination,p50_ms\na,b,10\nb,a,20\n"))
	if err != nil {
		t.Fatal(err)
	}
	if v := m.RTTms(0, 1); v != 15 {
		t.Errorf("both directions: %v, want their mean", v)
	}
}

// Coordinates come from database files and gossip: nonsense must still give
// a usable place.
func TestPlaceOfNonsenseCoordinates(t *testing.T) {
	m := latency.Measured
	fra := place(50.11, 8.68, 0)
	for _, c := range [][3]float64{{math.NaN(), 0, 0}, {0, math.Inf(1), 0}, {1e9, -1e9, math.NaN()}, {0, 0, math.Inf(1)}, {0, 0, -5}} {
		p := place(c[0], c[1], c[2])
		ms := m.BetweenMs(p, fra)
		if math.IsNaN(ms) || math.IsInf(ms, 0) || ms < 0 || math.IsNaN(p.AccessKm) || math.IsInf(p.AccessKm, 0) {
			t.Errorf("%v: %v ms, access %v km", c, ms, p.AccessKm)
		}
	}
}
