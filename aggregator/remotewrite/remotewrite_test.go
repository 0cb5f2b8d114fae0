package remotewrite

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
)

// pbReader is a minimal protobuf reader, written independently of Encode's
// protowire calls: varint, fixed64 and length-delimited fields only.
type pbReader struct {
	b   []byte
	err error
}

func (r *pbReader) varint() uint64 {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		if len(r.b) == 0 {
			r.err = errors.New("short varint")
			return 0
		}
		c := r.b[0]
		r.b = r.b[1:]
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v
		}
	}
	r.err = errors.New("varint too long")
	return 0
}

// next returns the next field's number and wire type, with its payload: the
// bytes of a length-delimited field, or the value of a varint or fixed64.
func (r *pbReader) next() (field int, typ int, data []byte, val uint64) {
	key := r.varint()
	field, typ = int(key>>3), int(key&7)
	switch typ {
	case 0:
		val = r.varint()
	case 1:
		if len(r.b) < 8 {
			r.err = errors.New("short fixed64")
			return
		}
		for i := 7; i >= 0; i-- {
			val = val<<8 | uint64(r.b[i])
		}
		r.b = r.b[8:]
	case 2:
		n := r.varint()
		if n > uint64(len(r.b)) {
			r.err = errors.New("length past end")
			return
		}
		data, r.b = r.b[:n], r.b[n:]
	default:
		r.err = errors.New("unexpected wire type")
	}
	return
}

func decode(t *testing.T, b []byte) []Series {
	t.Helper()
	var out []Series
	r := &pbReader{b: b}
	for len(r.b) > 0 && r.err == nil {
		f, typ, data, _ := r.next()
		if f != 1 || typ != 2 {
			t.Fatalf("WriteRequest field %d type %d, want timeseries (1, bytes)", f, typ)
		}
		var s Series
		ts := &pbReader{b: data}
		for len(ts.b) > 0 && ts.err == nil {
			f, typ, data, _ := ts.next()
			inner := &pbReader{b: data}
			switch {
			case f == 1 && typ == 2:
				var l Label
				for len(inner.b) > 0 && inner.err == nil {
					lf, _, v, _ := inner.next()
					if lf == 1 {
						l.Name = string(v)
					} else if lf == 2 {
						l.Value = string(v)
					}
				}
				s.Labels = append(s.Labels, l)
			case f == 2 && typ == 2:
				var smp Sample
				for len(inner.b) > 0 && inner.err == nil {
					sf, _, _, v := inner.next()
					if sf == 1 {
						smp.Value = math.Float64frombits(v)
					} else if sf == 2 {
						smp.Time = time.UnixMilli(int64(v))
					}
				}
				s.Samples = append(s.Samples, smp)
			default:
				t.Fatalf("TimeSeries field %d type %d", f, typ)
			}
			if inner.err != nil {
				t.Fatal(inner.err)
			}
		}
		if ts.err != nil {
			t.Fatal(ts.err)
		}
		out = append(out, s)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	return out
}

func TestEncodeDecodesBack(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	in := []Series{
		{Labels: []Label{{"region", "eu-west"}, {"__name__", "perigee_region_rps"}},
			Samples: []Sample{{Value: 321.5, Time: at}, {Value: -0.25, Time: at.Add(time.Second)}}},
		{Labels: []Label{{"__name__", "up"}}, Samples: []Sample{{Value: math.Inf(1), Time: at}}},
	}
	got := decode(t, Encode(in))
	// Labels come out sorted by name, as receivers require.
	want := []Series{
		{Labels: []Label{{"__name__", "perigee_region_rps"}, {"region", "eu-west"}}, Samples: in[0].Samples},
		in[1],
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, want)
	}
	if in[0].Labels[0].Name != "region" {
		t.Fatal("Encode reordered the caller's labels")
	}
}

func TestPushRetryRetriesPassingFailuresOnly(t *testing.T) {
	var calls atomic.Int32
	status := http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if b, err := snappy.Decode(nil, body); err != nil || string(b) != "req" {
			t.Errorf("body %q, %v", b, err)
		}
		if calls.Add(1) < 3 {
			w.WriteHeader(status)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	if err := PushRetry(ctx, srv.Client(), srv.URL, []byte("req"), 3, time.Millisecond); err != nil || calls.Load() != 3 {
		t.Fatalf("two 503s then 200: err %v after %d calls, want success after 3", err, calls.Load())
	}
	calls.Store(0)
	if err := PushRetry(ctx, srv.Client(), srv.URL, []byte("req"), 2, time.Millisecond); err == nil || calls.Load() != 2 {
		t.Fatalf("attempts bound: err %v after %d calls, want failure after 2", err, calls.Load())
	}
	calls.Store(0)
	status = http.StatusBadRequest
	if err := PushRetry(ctx, srv.Client(), srv.URL, []byte("req"), 3, time.Millisecond); !errors.Is(err, ErrRejected) || calls.Load() != 1 {
		t.Fatalf("400: err %v after %d calls, want ErrRejected after 1", err, calls.Load())
	}
}

// A redirected push is an error to retry that names where it pointed,
// not followed (TestPushesDoNotFollowRedirects has the whole story).
func TestPushSaysWhereARedirectPointed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/api/v1/write/", http.StatusMovedPermanently)
	}))
	defer srv.Close()
	err := Push(context.Background(), NewClient(time.Second), srv.URL+"/api/v1/write", []byte("req"))
	if err == nil || errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), `"/api/v1/write/"`) {
		t.Fatalf("err %v, want a retried failure naming the Location", err)
	}
}
