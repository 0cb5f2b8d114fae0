package edge

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"perigee/edge/admin"
	"perigee/edge/config"
	"perigee/telemetry"
	"perigee/telemetry/ship"
)

// mountAdmin builds the admin API with every part's endpoints.
func (n *Node) mountAdmin(cfg *config.Config) error {
	token, err := readToken(cfg.Admin.TokenFile)
	if err != nil {
		return err
	}
	n.admin = admin.New(n, promhttp.HandlerFor(n.metrics.Registry, promhttp.HandlerOpts{}), token)
	n.admin.HandleJSON("GET /policies", func() any { return n.engine.Policies() })
	n.admin.Handle("GET /decisions", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := 100
		if _, err := fmt.Sscan(r.URL.Query().Get("n"), &limit); err != nil || limit < 1 {
			limit = 100
		}
		admin.WriteJSON(w, http.StatusOK, n.engine.Decisions(limit))
	}))
	n.admin.HandleJSON("GET /transforms", n.transformStats)
	if n.cluster != nil {
		n.admin.HandleJSON("GET /members", func() any { return n.cluster.Members() })
		n.admin.HandleJSON("GET /regions", func() any { return n.cluster.Regions() })
	}
	if n.router != nil {
		n.admin.Handle("GET /geo/decide", n.router.ExplainHandler())
	}
	n.admin.HandleJSON("GET /telemetry", func() any {
		if n.shipper == nil {
			return map[string]string{"shipping": "off"}
		}
		return n.shipper.Stats()
	})
	return nil
}

// startTelemetry ships samples, decisions and sampled access records to the
// aggregator when the config names one.
func (n *Node) startTelemetry(ctx context.Context, cfg *config.Config) error {
	t := cfg.Telemetry
	if t == nil {
		return nil
	}
	sc := *t
	sc.Node, sc.Region = cfg.Node.ID, cfg.Node.Region
	s, err := ship.New(sc, n.log.With("component", "telemetry"))
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Pos("telemetry"), err)
	}
	n.shipper = s
	n.shipped = make(chan struct{})
	go func() {
		defer close(n.shipped)
		s.Run(ctx)
	}()
	return nil
}

// sampleConsumers are fed the node's one-second samples.
func (n *Node) sampleConsumers() []func(telemetry.NodeSample) {
	out := []func(telemetry.NodeSample){n.shareLoad}
	if n.shipper != nil {
		out = append(out, n.shipper.AddSample)
	}
	return out
}

// transformStats is GET /transforms: per transform of the config in
// force, its counters and the time spent in the guest.
func (n *Node) transformStats() any {
	st := n.acquire()
	defer st.release()
	type view struct {
		Calls, Answered, Errors, Traps, Timeouts, Busy, Replaced uint64
		GuestP50us, GuestP99us                                   int64
	}
	out := map[string]view{}
	if st.transforms == nil {
		return out
	}
	for name, s := range st.transforms.Stats() {
		out[name] = view{s.Calls, s.Answered, s.Errors, s.Traps, s.Timeouts, s.Busy, s.Replaced,
			s.Time.Quantile(0.5).Microseconds(), s.Time.Quantile(0.99).Microseconds()}
	}
	return out
}
