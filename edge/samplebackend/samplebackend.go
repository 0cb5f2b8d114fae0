// Package samplebackend is the built-in demo upstream behind `perigee
// sample-backend`, `make run`, the tests and the benchmarks: a small HTTP
// server with knobs for latency, error rate and response size.
package samplebackend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"perigee/units"
)

// MaxSize bounds a body the backend answers, Size and a request's size=:
// the body is made whole, so a size past what can be allocated would panic,
// and a large one hold that much memory.
const MaxSize = 64 << 20

// Options shape the backend's answers.
type Options struct {
	Name      string         `yaml:"name" json:"name"`
	Latency   units.Duration `yaml:"latency" json:"latency"`       // added before every answer
	ErrorRate float64        `yaml:"error_rate" json:"error_rate"` // share of requests answered 500
	Size      units.ByteSize `yaml:"size" json:"size"`             // response body bytes
}

// Handler answers:
//   - GET /healthz: 200 "ok", never slowed or failed;
//   - POST/PUT with a body: reads it all and reports the byte count;
//   - a path ending in .json: a small JSON account record, with the
//     password and ssn fields the redact transform masks;
//   - anything else: Size bytes (the alphabet, in lines) after Latency, or
//     a 500 at ErrorRate.
//
// Query parameters latency=, status= and size= override the options per
// request, which lets tests drive timeouts and errors.
func Handler(o Options) http.Handler {
	body := filler(int(o.Size))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			_, _ = io.WriteString(w, "ok\n")
			return
		}
		q := r.URL.Query()
		delay := o.Latency.D()
		if d, err := time.ParseDuration(q.Get("latency")); err == nil {
			delay = d
		}
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		h := w.Header()
		h.Set("X-Backend", o.Name)
		if r.ContentLength != 0 && (r.Method == http.MethodPost || r.Method == http.MethodPut) {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			h.Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"backend": o.Name, "received": n})
			return
		}
		if strings.HasSuffix(r.URL.Path, ".json") {
			h.Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"backend": o.Name, "user": "demo", "password": "hunter2", "ssn": "078-05-1120"})
			return
		}
		status := http.StatusOK
		if s, err := strconv.Atoi(q.Get("status")); err == nil && s >= 200 && s <= 599 {
			status = s
		} else if o.ErrorRate > 0 && rand.Float64() < o.ErrorRate {
			status = http.StatusInternalServerError
		}
		out := body
		if s, err := strconv.Atoi(q.Get("size")); err == nil && s >= 0 && s <= MaxSize {
			out = filler(s)
		}
		h.Set("Content-Type", "text/plain")
		h.Set("Content-Length", strconv.Itoa(len(out)))
		w.WriteHeader(status)
		_, _ = w.Write(out)
	})
}

// filler is n bytes of the alphabet in lines of 64, ending in a newline
// (when n > 0) so that a terminal shows the prompt on its own line.
func filler(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
		if i%65 == 64 || i == n-1 {
			b[i] = '\n'
		}
	}
	return b
}

// Serve runs the backend on addr until ctx is done.
func Serve(ctx context.Context, addr string, o Options) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("sample backend: %w", err)
	}
	return ServeListener(ctx, ln, o)
}

// ServeListener runs the backend on ln until ctx is done.
func ServeListener(ctx context.Context, ln net.Listener, o Options) error {
	srv := &http.Server{Handler: Handler(o), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("sample backend %s: %w", ln.Addr(), err)
	}
	return nil
}
