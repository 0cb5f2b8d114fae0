// Package latency predicts the round trip between two places from round
// trips measured between metros, not from distance alone: Internet paths
// follow cables and peering, so Johannesburg is nearer Frankfurt than São
// Paulo although the map says otherwise.
//
// A place is reduced to its nearest metros, weighted by distance and by how
// precisely the place is known, plus the distance it still has to cover to
// them (the last mile). The round trip between two places is then the
// weighted mean of the measured metro-to-metro figures, and the caller adds
// its own cost per kilometre of last mile.
package latency

import (
	"bytes"
	_ "embed"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// The measured matrix and its metros; their provenance is in their headers.
var (
	//go:embed metros.csv
	metrosCSV []byte
	//go:embed rtt.csv
	rttCSV []byte
)

// Measured is the matrix shipped with the node (see docs/geo.md).
var Measured = mustLoad()

func mustLoad() *Matrix {
	m, err := Load(bytes.NewReader(metrosCSV), bytes.NewReader(rttCSV))
	if err != nil {
		// Embedded at build time and parsed by the package's tests.
		panic("latency: embedded matrix: " + err.Error())
	}
	return m
}

// Metro is one measured place.
type Metro struct {
	ID      string
	City    string
	Country string
	Lat     float64
	Lon     float64
	unit    [3]float64 // position on the unit sphere, for fast nearest search
}

// Matrix holds median round trips between every pair of its metros.
type Matrix struct {
	metros []Metro
	ms     []float32 // len(metros)², symmetric, 0 on the diagonal
}

// maxMetros keeps metro indices in a byte.
const maxMetros = 255

// Load reads metros (id,city,country,lat,lon) and round trips
// (source,destination,p50_ms). Lines starting with # are comments; the
// first other line of each is a header. A pair measured both ways gets the
// mean of the two; every pair must be measured at least one way.
func Load(metros, rtts io.Reader) (*Matrix, error) {
	rows, err := readCSV(metros, 5)
	if err != nil {
		return nil, fmt.Errorf("metros: %w", err)
	}
	if len(rows) == 0 || len(rows) > maxMetros {
		return nil, fmt.Errorf("metros: %d metros, want 1 to %d", len(rows), maxMetros)
	}
	m := &Matrix{}
	index := map[string]int{}
	for i, r := range rows {
		lat, err1 := strconv.ParseFloat(r[3], 64)
		lon, err2 := strconv.ParseFloat(r[4], 64)
		// Written so that NaN, which ParseFloat accepts, fails too.
		if err := errors.Join(err1, err2); err != nil || !(math.Abs(lat) <= 90 && math.Abs(lon) <= 180) {
			return nil, fmt.Errorf("metros: %s: bad coordinates %q,%q", r[0], r[3], r[4])
		}
		if _, dup := index[r[0]]; dup || r[0] == "" {
			return nil, fmt.Errorf("metros: id %q empty or repeated", r[0])
		}
		index[r[0]] = i
		m.metros = append(m.metros, Metro{ID: r[0], City: r[1], Country: r[2], Lat: lat, Lon: lon, unit: unitVector(lat, lon)})
	}
	n := len(m.metros)
	sum := make([]float64, n*n)
	count := make([]int, n*n)
	rows, err = readCSV(rtts, 3)
	if err != nil {
		return nil, fmt.Errorf("round trips: %w", err)
	}
	for _, r := range rows {
		a, okA := index[r[0]]
		b, okB := index[r[1]]
		v, err := strconv.ParseFloat(r[2], 64)
		switch {
		case !okA || !okB:
			return nil, fmt.Errorf("round trips: %s→%s: unknown metro", r[0], r[1])
		case err != nil || !(v > 0 && v <= 1000):
			return nil, fmt.Errorf("round trips: %s→%s: %q is not a round trip in ms", r[0], r[1], r[2])
		case a == b:
			return nil, fmt.Errorf("round trips: %s to itself", r[0])
		}
		for _, k := range []int{a*n + b, b*n + a} {
			sum[k] += v
			count[k]++
		}
	}
	m.ms = make([]float32, n*n)
	for a := range n {
		for b := range n {
			k := a*n + b
			if a == b {
				continue
			}
			if count[k] == 0 {
				return nil, fmt.Errorf("round trips: %s↔%s not measured", m.metros[a].ID, m.metros[b].ID)
			}
			m.ms[k] = float32(sum[k] / float64(count[k]))
		}
	}
	return m, nil
}

func readCSV(r io.Reader, fields int) ([][]string, error) {
	cr := csv.NewReader(io.LimitReader(r, 1<<20))
	cr.Comment = '#'
	cr.FieldsPerRecord = fields
	rows, err := cr.ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New("no header")
	}
	for _, r := range rows {
		for i := range r {
			r[i] = strings.TrimSpace(r[i])
		}
	}
	return rows[1:], nil
}

// Metros lists the matrix's metros.
func (m *Matrix) Metros() []Metro { return m.metros }

// RTTms is the measured round trip between two metros, by index.
func (m *Matrix) RTTms(a, b int) float64 { return float64(m.ms[a*len(m.metros)+b]) }

// K is how many metros a place is spread over.
const K = 3

// Place is a location as the matrix sees it: up to K metros with weights
// summing to 1, and the weighted distance left to cover to them.
type Place struct {
	n        uint8
	idx      [K]uint8
	w        [K]float32
	km       [K]float32
	AccessKm float64 // Σ weight · distance to the metro
}

// spreadKm is how far a precisely known place's weight spreads: a metro is
// tens of kilometres across, so a client this close counts as in it.
const spreadKm = 50

// Place locates a point known to within radiusKm (0 if exact). Metros are
// weighted by 1/(d' + spreadKm)², where d' is the distance from the circle
// of uncertainty rather than from its centre, so a country-centre record
// with a radius of hundreds of kilometres is spread over the metros it may
// be near instead of pinned to whichever is closest to the centroid.
//
// Coordinates come from database files and gossip, so nonsense is tamed
// rather than trusted: latitude is clamped, longitude taken modulo 360°,
// anything not finite read as 0 and a radius that is not a positive number
// as exact.
func (m *Matrix) Place(lat, lon, radiusKm float64) Place {
	lat = min(max(finite(lat), -90), 90)
	lon = math.Mod(finite(lon), 360)
	if !(radiusKm > 0) {
		radiusKm = 0
	}
	u := unitVector(lat, lon)
	var p Place
	var best [K]float64 // squared chord lengths of p.idx, ascending
	for i := range m.metros {
		v := &m.metros[i].unit
		dx, dy, dz := u[0]-v[0], u[1]-v[1], u[2]-v[2]
		c := dx*dx + dy*dy + dz*dz
		if int(p.n) == K && c >= best[K-1] {
			continue
		}
		j := min(int(p.n), K-1)
		for j > 0 && best[j-1] > c {
			best[j], p.idx[j] = best[j-1], p.idx[j-1]
			j--
		}
		best[j], p.idx[j] = c, uint8(i)
		p.n = uint8(min(int(p.n)+1, K))
	}
	var total float64
	var w [K]float64
	for j := range int(p.n) {
		km := 2 * earthRadiusKm * math.Asin(min(1, math.Sqrt(best[j])/2))
		p.km[j] = float32(km)
		d := max(km-radiusKm, 0) + spreadKm
		w[j] = 1 / (d * d)
		total += w[j]
	}
	for j := range int(p.n) {
		p.w[j] = float32(w[j] / total)
		p.AccessKm += w[j] / total * float64(p.km[j])
	}
	return p
}

// BetweenMs is the measured part of the round trip between two places: the
// weighted mean over their metros. The last mile (AccessKm of each) is the
// caller's to price.
func (m *Matrix) BetweenMs(a, b Place) float64 {
	n := len(m.metros)
	var ms float64
	for i := range int(a.n) {
		row := m.ms[int(a.idx[i])*n:]
		var s float32
		for j := range int(b.n) {
			s += b.w[j] * row[b.idx[j]]
		}
		ms += float64(a.w[i] * s)
	}
	return ms
}

// Share is one metro's part in a place, for explanations.
type Share struct {
	Metro  string  `json:"metro"`
	City   string  `json:"city"`
	Weight float64 `json:"weight"`
	Km     float64 `json:"km"`
}

// Shares lists the metros a place is spread over, heaviest first.
func (m *Matrix) Shares(p Place) []Share {
	out := make([]Share, 0, p.n)
	for j := range int(p.n) {
		mt := m.metros[p.idx[j]]
		out = append(out, Share{Metro: mt.ID, City: mt.City, Weight: math.Round(float64(p.w[j])*1000) / 1000, Km: math.Round(float64(p.km[j]))})
	}
	// Nearest first is also heaviest first: weight falls with distance.
	return out
}

const earthRadiusKm = 6371.0

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func unitVector(lat, lon float64) [3]float64 {
	const rad = math.Pi / 180
	sinLat, cosLat := math.Sincos(lat * rad)
	sinLon, cosLon := math.Sincos(lon * rad)
	return [3]float64{cosLat * cosLon, cosLat * sinLon, sinLat}
}
