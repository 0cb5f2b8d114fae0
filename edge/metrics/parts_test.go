package metrics

import (
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"perigee/edge/upstream"
	"perigee/telemetry"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

func TestPartsSeries(t *testing.T) {
	m := New(func() []*upstream.Service { return nil })
	var h telemetry.Histogram
	h.Observe(3 * time.Millisecond)
	m.Transforms(func() []TransformFigures {
		return []TransformFigures{{Name: "auth", Calls: 7, Traps: 1, StartFailures: 2, Time: h.Snapshot()}}
	})
	m.Gauges("perigee_service_replicas", "r", []string{"service"}, func(emit Emit) { emit(3, "api") })
	m.Decided("p", "scale", true, false, "")
	m.Decided("p", "scale", false, false, "above max")
	m.Decided("p", "weight", false, true, "")
	m.Done(nil, "r", "s", "HTTP/2.0", 200, time.Millisecond)
	body := scrape(t, m)
	for _, want := range []string{
		`perigee_transform_calls_total{transform="auth"} 7`,
		`perigee_transform_errors_total{kind="trap",transform="auth"} 1`,
		`perigee_transform_guest_seconds_count{transform="auth"} 1`,
		`perigee_transform_start_failures_total{transform="auth"} 2`,
		`perigee_service_replicas{service="api"} 3`,
		`perigee_policy_decisions_total{action="scale",outcome="applied",policy="p"} 1`,
		`perigee_policy_decisions_total{action="scale",outcome="rejected",policy="p"} 1`,
		`perigee_policy_decisions_total{action="weight",outcome="dry_run",policy="p"} 1`,
		`perigee_requests_total{code="200",proto="h2",route="r",service="s"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s", want)
		}
	}
}

// Guest time is a Prometheus histogram, so a fleet's scrapes aggregate
// (histogram_quantile over sum by le) where quantiles of a summary cannot.
// Its le bounds are bounds of the node's own buckets, so each count is
// exact, not an estimate.
func TestTransformGuestTimeIsAHistogram(t *testing.T) {
	m := New(func() []*upstream.Service { return nil })
	var h telemetry.Histogram
	h.Observe(100 * time.Microsecond)
	h.Observe(3 * time.Millisecond)
	h.Observe(4095 * time.Microsecond)
	m.Transforms(func() []TransformFigures { return []TransformFigures{{Name: "auth", Calls: 3, Time: h.Snapshot()}} })
	body := scrape(t, m)
	for _, want := range []string{
		"# TYPE perigee_transform_guest_seconds histogram\n",
		`perigee_transform_guest_seconds_bucket{transform="auth",le="6.4e-05"} 0` + "\n",
		`perigee_transform_guest_seconds_bucket{transform="auth",le="0.000128"} 1` + "\n",
		`perigee_transform_guest_seconds_bucket{transform="auth",le="0.002048"} 1` + "\n",
		`perigee_transform_guest_seconds_bucket{transform="auth",le="0.004096"} 3` + "\n",
		`perigee_transform_guest_seconds_bucket{transform="auth",le="+Inf"} 3` + "\n",
		`perigee_transform_guest_seconds_sum{transform="auth"} 0.007195` + "\n",
		`perigee_transform_guest_seconds_count{transform="auth"} 3` + "\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q", want)
		}
	}
	if n := strings.Count(body, "perigee_transform_guest_seconds_bucket{"); n > 20 {
		t.Errorf("%d buckets per transform; keep the series few", n)
	}
}

// A route's cached series count what the label lookups counted.
func TestRouteSeriesCountLikeTheLabels(t *testing.T) {
	m := New(func() []*upstream.Service { return nil })
	rs := m.Route("r", "s")
	for range 3 {
		m.Begin(rs.Stats)
		m.DoneRoute(rs, "HTTP/1.1", 200, time.Millisecond, false)
	}
	m.Begin(rs.Stats)
	m.DoneRoute(rs, "HTTP/3.0", 503, time.Millisecond, false)
	m.Begin(rs.Stats)
	m.Done(rs.Stats, "r", "s", "HTTP/1.1", 200, time.Millisecond)
	body := scrape(t, m)
	for _, want := range []string{
		`perigee_requests_total{code="200",proto="h1",route="r",service="s"} 4`,
		`perigee_requests_total{code="503",proto="h3",route="r",service="s"} 1`,
		`perigee_request_duration_seconds_count{route="r",service="s"} 5`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if m.InFlight() != 0 {
		t.Errorf("in flight %d", m.InFlight())
	}
}

// BenchmarkDone compares recording a request by label lookups with a
// route's cached series.
func BenchmarkDone(b *testing.B) {
	m := New(func() []*upstream.Service { return nil })
	rs := m.Route("route", "service")
	b.Run("labels", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Begin(rs.Stats)
				m.Done(rs.Stats, "route", "service", "HTTP/1.1", 200, time.Millisecond)
			}
		})
	})
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Begin(rs.Stats)
				m.DoneRoute(rs, "HTTP/1.1", 200, time.Millisecond, false)
			}
		})
	})
}

// HTTP/2 errors count by kind, and the kinds are bounded: past
// maxHTTP2Kinds of them, the rest count as one "other".
func TestHTTP2ErrorKindsAreBounded(t *testing.T) {
	m := New(func() []*upstream.Service { return nil })
	for i := range maxHTTP2Kinds + 50 {
		m.HTTP2Error("kind_" + strconv.Itoa(i))
	}
	m.HTTP2Error("kind_0")
	body := scrape(t, m)
	if n := strings.Count(body, "perigee_http2_errors_total{"); n != maxHTTP2Kinds+1 {
		t.Errorf("%d series of perigee_http2_errors_total; want %d kinds and other", n, maxHTTP2Kinds)
	}
	for _, want := range []string{`perigee_http2_errors_total{kind="kind_0"} 2`, `perigee_http2_errors_total{kind="other"} 50`} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s", want)
		}
	}
}
