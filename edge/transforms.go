package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"perigee/edge/config"
	"perigee/edge/metrics"
	"perigee/files"
	"perigee/runtime/wasm"
)

// transforms is the Wasm runtime every config state compiles its modules
// in. It starts on first use; its compilation cache lives under the user's
// cache directory so a restart does not recompile.
type transforms struct {
	log  *slog.Logger
	node *Node // whose services proxy-wasm filters' dispatched calls go to
	once sync.Once
	host *wasm.Host
	err  error
}

// load compiles the config's Wasm modules into a set, reusing prev's
// unchanged transforms. On error prev keeps serving untouched.
func (t *transforms) load(ctx context.Context, cfg *config.Config, prev *wasm.Set) (*wasm.Set, error) {
	if len(cfg.Transforms) == 0 && prev == nil {
		return nil, nil
	}
	specs := make([]wasm.Spec, 0, len(cfg.Transforms))
	for name, tc := range cfg.Transforms {
		bin, err := files.Read(tc.Module, config.MaxModuleBytes)
		if err != nil {
			return nil, fmt.Errorf("%s: transform %q: %w", cfg.Pos("transforms", name, "module"), name, err)
		}
		guestCfg, err := wasm.EncodeConfig(tc.Config, ".")
		if err != nil {
			return nil, fmt.Errorf("%s: transform %q config: %w", cfg.Pos("transforms", name, "config"), name, err)
		}
		if tc.Configuration != "" {
			guestCfg = []byte(tc.Configuration)
		}
		specs = append(specs, wasm.Spec{Name: name, Source: tc.Module, Wasm: bin, Config: guestCfg, Settings: *tc})
	}
	t.once.Do(func() {
		dir := ""
		if base, err := os.UserCacheDir(); err == nil {
			dir = filepath.Join(base, "perigee", "wasm")
		}
		t.host, t.err = wasm.NewHost(wasm.Options{
			CacheDir: dir, Logger: t.log.With("component", "wasm"),
			Node:       wasm.Node{ID: cfg.Node.ID, Region: cfg.Node.Region},
			Dispatcher: dispatcher{t.node}, Registerer: t.node.metrics.Registry,
		})
	})
	if t.err != nil {
		return nil, t.err
	}
	set, err := t.host.LoadSet(ctx, specs, prev)
	if err != nil {
		at := []any{"transforms"}
		if le := (*wasm.LoadError)(nil); errors.As(err, &le) {
			at = append(at, le.Transform)
		}
		return nil, fmt.Errorf("%s: %w", cfg.Pos(at...), err)
	}
	return set, nil
}

// close stops the runtime, once every state's set is released.
func (t *transforms) close(ctx context.Context) error {
	if t.host == nil {
		return nil
	}
	return t.host.Close(ctx)
}

// transformStats is GET /transforms: per transform of the state, its counters and
// the time spent in the guest.
func (st *state) transformStats() any {
	type view struct {
		Calls    uint64 `json:"calls"`
		Answered uint64 `json:"answered"`
		Errors   uint64 `json:"errors"`
		Traps    uint64 `json:"traps"`
		Timeouts uint64 `json:"timeouts"`
		Busy     uint64 `json:"busy"`
		Replaced uint64 `json:"replaced"`
		Grown    uint64 `json:"grown"`
		// StartFailures are instance starts that failed or overran
		// init_timeout: a transform that cannot start any more shows here.
		StartFailures uint64  `json:"start_failures"`
		GuestP50Sec   float64 `json:"guest_p50_seconds"`
		GuestP99Sec   float64 `json:"guest_p99_seconds"`
	}
	out := map[string]view{}
	if st.transforms == nil {
		return out
	}
	for name, s := range st.transforms.Stats() {
		out[name] = view{s.Calls, s.Answered, s.Errors, s.Traps, s.Timeouts, s.Busy, s.Replaced, s.Grown, s.StartFailures,
			s.Time.Quantile(0.5).Seconds(), s.Time.Quantile(0.99).Seconds()}
	}
	return out
}

// transformFigures are the state's transforms' counters for the metrics.
func (st *state) transformFigures() []metrics.TransformFigures {
	if st.transforms == nil {
		return nil
	}
	var out []metrics.TransformFigures
	for name, s := range st.transforms.Stats() {
		out = append(out, metrics.TransformFigures{Name: name, Calls: s.Calls, Errors: s.Errors, Traps: s.Traps, Timeouts: s.Timeouts, Busy: s.Busy, StartFailures: s.StartFailures, Time: s.Time})
	}
	return out
}

// dispatcher sends proxy-wasm filters' dispatched calls to a service of the
// current config, through the node's proxy and upstream pools, like any
// request of a route to that service.
type dispatcher struct{ n *Node }

var _ wasm.Dispatcher = dispatcher{}

// maxCallResponse bounds what a dispatched call's response may hold; the
// transform's max_buffer bounds it again.
const maxCallResponse = 16 << 20

func (d dispatcher) Dispatch(ctx context.Context, service string, req *http.Request) (*http.Response, error) {
	// A filter's root context may call from its first tick, while the
	// node's first state is still being built.
	if d.n.state.Load() == nil {
		return nil, fmt.Errorf("dispatched call to %q before the node has its services", service)
	}
	st := d.n.acquire()
	defer st.release()
	svc := st.services[service]
	if svc == nil {
		return nil, fmt.Errorf("dispatched call to unknown service %q", service)
	}
	req = req.WithContext(ctx)
	req.RemoteAddr = "127.0.0.1:0" // the node itself
	rec := &callRecorder{header: http.Header{}}
	d.n.proxy.Handler(svc, st.cfg.Timeouts.Stream).ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.tooLarge {
		return nil, fmt.Errorf("dispatched call to %q: response larger than %d bytes", service, maxCallResponse)
	}
	return &http.Response{
		StatusCode: rec.status, Header: rec.header, Body: io.NopCloser(&rec.body),
		ContentLength: int64(rec.body.Len()), Request: req,
	}, nil
}

// callRecorder keeps a dispatched call's response, up to maxCallResponse.
type callRecorder struct {
	header   http.Header
	status   int
	body     bytes.Buffer
	tooLarge bool
}

func (r *callRecorder) Header() http.Header { return r.header }

func (r *callRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *callRecorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	if r.body.Len()+len(p) > maxCallResponse {
		r.tooLarge = true
		return 0, errors.New("dispatched call response too large")
	}
	return r.body.Write(p)
}
