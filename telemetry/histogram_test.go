package telemetry

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestQuantilesWithinBucketError(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(1, 2))
	var vals []time.Duration
	for range 20000 {
		d := time.Duration(r.ExpFloat64()*float64(20*time.Millisecond)) + time.Microsecond
		vals = append(vals, d)
		h.Observe(d)
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	s := h.Snapshot()
	for _, q := range []float64{0.5, 0.9, 0.99} {
		want := vals[int(math.Ceil(q*float64(len(vals))))-1]
		got := s.Quantile(q)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.07 {
			t.Errorf("p%v = %v, exact %v: %.1f%% off, beyond the 6.25%% bucket bound", q*100, got, want, rel*100)
		}
	}
	if s.Count() != 20000 {
		t.Fatalf("count %d", s.Count())
	}
}

func TestMergeIsExact(t *testing.T) {
	var a, b, both Histogram
	for i := range 1000 {
		d := time.Duration(i) * 37 * time.Microsecond
		if i%3 == 0 {
			a.Observe(d)
		} else {
			b.Observe(d)
		}
		both.Observe(d)
	}
	m := a.Snapshot()
	m.Merge(b.Snapshot())
	w := both.Snapshot()
	for _, q := range []float64{0.1, 0.5, 0.99, 1} {
		if m.Quantile(q) != w.Quantile(q) {
			t.Fatalf("merged p%v %v != combined %v", q, m.Quantile(q), w.Quantile(q))
		}
	}
	if m.SumUS != w.SumUS || m.Mean() != w.Mean() {
		t.Fatal("sums differ")
	}
}

func TestSubGivesTheWindow(t *testing.T) {
	var h Histogram
	h.Observe(time.Millisecond)
	before := h.Snapshot()
	for range 10 {
		h.Observe(100 * time.Millisecond)
	}
	win := h.Snapshot().Sub(before)
	if win.Count() != 10 || win.Quantile(0.01) < 90*time.Millisecond {
		t.Fatalf("window holds %d observations, p1 %v", win.Count(), win.Quantile(0.01))
	}
}

func TestEncodingRoundTripsAndRejectsGarbage(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{0, 3 * time.Microsecond, time.Millisecond, time.Second, 100 * time.Hour * 24 * 365} {
		h.Observe(d)
	}
	s := h.Snapshot()
	b := s.AppendBinary([]byte("prefix"))
	got, rest, err := DecodeHistogram(append(b[6:], 0xAA))
	if err != nil || len(rest) != 1 || got.Count() != s.Count() || got.SumUS != s.SumUS || got.Quantile(1) != s.Quantile(1) {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	for _, bad := range [][]byte{nil, {0x80}, {1, 200, 3}, {1, 2, 0xff, 0xff, 0xff, 0xff, 0x0f, 1}} {
		if _, _, err := DecodeHistogram(bad); err == nil {
			t.Errorf("decoded garbage %x", bad)
		}
	}
}

func FuzzDecodeHistogram(f *testing.F) {
	var h Histogram
	h.Observe(time.Millisecond)
	f.Add(h.Snapshot().AppendBinary(nil))
	f.Add([]byte{0, 1, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, _, err := DecodeHistogram(b)
		if err == nil {
			_ = s.Quantile(0.99)
			again, _, err := DecodeHistogram(s.AppendBinary(nil))
			if err != nil || again.Count() != s.Count() {
				t.Fatalf("re-encoding failed: %v", err)
			}
		}
	})
}

func TestEWMADecaysWithTime(t *testing.T) {
	e := NewEWMA(time.Second)
	t0 := time.Now()
	e.Update(100, t0)
	e.Update(0, t0.Add(time.Second))
	if v := e.Value(); math.Abs(v-100/math.E) > 0.01 {
		t.Fatalf("after one time constant the old value keeps 1/e: got %v", v)
	}
}

func TestMergeServicesWeightsErrorRates(t *testing.T) {
	got := MergeServices([]NodeSample{
		{Services: map[string]ServiceSample{"api": {RPS: 100, ErrorRate: 0.1, InFlight: 3}}},
		{Services: map[string]ServiceSample{"api": {RPS: 300, ErrorRate: 0, InFlight: 1}}},
	})["api"]
	if got.RPS != 400 || got.InFlight != 4 || math.Abs(got.ErrorRate-0.025) > 1e-9 {
		t.Fatalf("merged %+v", got)
	}
}

func TestParseStat(t *testing.T) {
	line := []byte("42 (my (odd) name) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000000 300 18446744073709551615")
	u, err := parseStat(line)
	if err != nil || u.CPU != 3*time.Second || u.RSSBytes == 0 {
		t.Fatalf("parseStat = %+v, %v", u, err)
	}
	if _, err := parseStat([]byte("garbage")); err == nil {
		t.Fatal("garbage accepted")
	}
}
