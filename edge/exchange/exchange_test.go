package exchange

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestTraceparentIsContinuedOrCreated(t *testing.T) {
	in := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tr := continueTrace(in)
	if tr.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || tr.SpanID == "00f067aa0ba902b7" || len(tr.SpanID) != 16 {
		t.Fatalf("trace not continued with a new span: %+v", tr)
	}
	for _, bad := range []string{"", "garbage", strings.Replace(in, "4bf9", "XYZ!", 1), "ff" + in[2:], "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		tr := continueTrace(bad)
		if len(tr.TraceID) != 32 || tr.TraceID == "4bf92f3577b34da6a3ce929d0e0e4736" || !isHex(tr.TraceID) {
			t.Fatalf("bad traceparent %q gave %+v", bad, tr)
		}
	}
	if h := tr.Header(); len(h) != 55 {
		t.Fatalf("header %q is not 55 characters", h)
	}
}

func TestTraceparentIsItsFields(t *testing.T) {
	for _, in := range []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "garbage"} {
		tr := continueTrace(in)
		if want := "00-" + tr.TraceID + "-" + tr.SpanID + "-" + tr.Flags; tr.Header() != want || !isHex(tr.SpanID) || !isHex(tr.Flags) {
			t.Fatalf("from %q: header %q, fields %+v", in, tr.Header(), tr)
		}
	}
	if a, b := continueTrace(""), continueTrace(""); a.TraceID == b.TraceID || a.SpanID == b.SpanID {
		t.Fatalf("two new traces share ids: %+v %+v", a, b)
	}
}

func TestRequestIDKeptOrMade(t *testing.T) {
	if id := requestID("abc-123"); id != "abc-123" {
		t.Fatalf("sane id replaced: %q", id)
	}
	for _, bad := range []string{"", "has space", strings.Repeat("x", 200), "ctl\x01"} {
		if id := requestID(bad); id == bad || len(id) != 16 || !isHex(id) {
			t.Fatalf("bad id %q gave %q", bad, id)
		}
	}
}

func TestErrorBodyCarriesTheRequestID(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Request-Id", "req-7")
	x, ctx := Begin(r, time.Now())
	defer End(x)
	w := httptest.NewRecorder()
	Error(w, r.WithContext(ctx), 503, "no healthy backend")
	var body struct {
		Error     string `json:"error"`
		Status    int    `json:"status"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if w.Code != 503 || body.Status != 503 || body.RequestID != "req-7" || body.Error != "no healthy backend" {
		t.Fatalf("got %d %+v", w.Code, body)
	}
	if w.Header().Get("Content-Type") != "application/json" {
		t.Fatal("not JSON")
	}
}

// Trace flags this version does not define are set to zero on the way on
// (W3C Trace Context: "Vendors MUST set those to zero"); sampled and
// random (Level 2) pass.
func TestTraceFlagsKeepOnlyDefinedBits(t *testing.T) {
	for in, want := range map[string]string{"01": "01", "00": "00", "03": "03", "ff": "03", "fc": "00", "a5": "01"} {
		if tr := continueTrace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-" + in); tr.Flags != want || !tr.Continued {
			t.Errorf("flags %s: sent on as %s (continued %v), want %s", in, tr.Flags, tr.Continued, want)
		}
	}
}
