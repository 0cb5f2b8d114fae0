package edge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"perigee/certs/acme"
	"perigee/connlimit"
	"perigee/edge/admin"
	"perigee/edge/config"
	"perigee/edge/metrics"
)

// autocert gets the node's certificates from an ACME CA when the config
// has an acme section, and runs the optional plain HTTP listener that
// answers HTTP-01 challenges and redirects the rest to HTTPS.
type autocert struct {
	log     *slog.Logger
	manager *acme.Manager
	plain   *http.Server
	addr    string // where the HTTP-01 listener listens
}

// newAutocert builds the manager (it reads ca_roots and makes the storage
// directory); nil without an acme section.
func newAutocert(cfg *config.Config, log *slog.Logger) (*autocert, error) {
	if cfg.ACME == nil {
		return nil, nil
	}
	log = log.With("component", "acme")
	m, err := acme.New(*cfg.ACME, log)
	if err != nil {
		return nil, err
	}
	return &autocert{log: log, manager: m}, nil
}

// start runs once the HTTPS listener is open at httpsAddr, which answers
// TLS-ALPN-01: it opens the HTTP-01 listener, bounded by a limiter limit
// makes, and starts obtaining.
func (a *autocert) start(cfg *config.Config, httpsAddr string, adm *admin.API, m *metrics.Metrics, limit func(string, connlimit.Settings) *connlimit.Limiter) error {
	adm.HandleJSON("GET /certificates", func() any {
		if a == nil {
			return map[string]string{"acme": "off"}
		}
		return a.manager.Stats()
	})
	if a == nil {
		return nil
	}
	// A failing renewal keeps the old certificate serving, so it shows
	// nowhere but here and in the log until the certificate expires.
	m.Counters("perigee_acme_certificates_total", "Certificates this node obtained or renewed from the ACME CA, and attempts that failed.", []string{"outcome"}, func(emit metrics.Emit) {
		st := a.manager.Stats()
		emit(float64(st.Obtained), "obtained")
		emit(float64(st.Failed), "failed")
	})
	m.Gauges("perigee_acme_certificate_expiry_timestamp_seconds", "When each host's certificate served now expires (Unix seconds); absent while it has none.", []string{"host"}, func(emit metrics.Emit) {
		for _, h := range a.manager.Stats().Hosts {
			if !h.NotAfter.IsZero() {
				emit(float64(h.NotAfter.Unix()), h.Host)
			}
		}
	})
	if addr := cfg.ACME.HTTPListen; addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("acme.http_listen: %w", err)
		}
		ln = connlimit.Listen(ln, limit("acme", cfg.Limits.Connections))
		a.addr = ln.Addr().String()
		_, httpsPort, _ := net.SplitHostPort(httpsAddr)
		t := cfg.Timeouts
		a.plain = &http.Server{
			Handler:           a.manager.HTTPHandler(httpsPort),
			ReadHeaderTimeout: t.ReadHeader.D(),
			// Challenges and redirects have no body worth waiting for,
			// and their answers are a few hundred bytes.
			ReadTimeout:    t.ReadHeader.D(),
			WriteTimeout:   t.ReadHeader.D(),
			IdleTimeout:    t.Idle.D(),
			MaxHeaderBytes: int(cfg.Limits.MaxHeaderBytes),
			ErrorLog:       slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
		}
		go func() {
			if err := a.plain.Serve(ln); err != nil && err != http.ErrServerClosed {
				a.log.Error("listener stopped", "listener", "acme.http_listen", "err", err)
			}
		}()
	}
	return a.manager.Start(httpsAddr, a.addr)
}

// close stops renewals and the HTTP-01 listener, waiting for the
// renewals until ctx ends.
func (a *autocert) close(ctx context.Context) {
	if a == nil {
		return
	}
	if a.plain != nil {
		a.plain.Close()
	}
	a.manager.Stop(ctx)
}
