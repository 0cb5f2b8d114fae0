package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"perigee/certs"
	"perigee/edge/config"
)

// reloads serialises reloads and keeps the latest outcome.
type reloads struct {
	mu   sync.Mutex
	last ReloadResult
}

// ReloadResult is the outcome of the latest reload, for GET /status.
type ReloadResult struct {
	At    time.Time `json:"at,omitzero"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
}

func (r *reloads) latest() ReloadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Reload re-reads the config and swaps it in. A config that does not load
// or validate, or changes what only a restart can change, is refused and the
// old one keeps serving.
func (n *Node) Reload() error {
	n.reloads.mu.Lock()
	defer n.reloads.mu.Unlock()
	err := n.reload()
	n.reloads.last = ReloadResult{At: time.Now(), OK: err == nil}
	if err != nil {
		n.reloads.last.Error = err.Error()
		n.opts.Log.Error("reload refused; the old config keeps serving", "err", err)
		return err
	}
	n.opts.Log.Info("config reloaded")
	return nil
}

func (n *Node) reload() error {
	cfg, err := n.opts.Load()
	if err != nil {
		return err
	}
	old := n.state.Load()
	if err := needsRestart(cfg, old.cfg); err != nil {
		return err
	}
	if !reflect.DeepEqual(cfg.ACME, old.cfg.ACME) {
		return errors.New("acme changed: that needs a restart")
	}
	// Certificate files are read again on every reload, for rotation; a dev
	// certificate is kept as long as the config asks for one. It is swapped
	// in only once everything else has loaded.
	var cert *tls.Certificate
	if cfg.TLS.Cert != "" || old.cfg.TLS.Cert != "" {
		if cert, err = certs.Load(cfg.TLS.Cert, cfg.TLS.Key, certHosts(cfg)); err != nil {
			return err
		}
	}
	// The mesh's keys rotate with a reload (docs/mesh.md): the keyring
	// file is read again, and a bad one refuses the reload.
	if err := n.fleet.reloadKeyring(); err != nil {
		return err
	}
	st, err := n.scaling.reload(cfg, func() (*state, error) { return n.buildState(context.Background(), cfg, old) })
	if err != nil {
		if st != nil {
			n.retire(st)
		}
		return err
	}
	if cert != nil {
		n.certs.Set(cert)
	}
	n.state.Store(st)
	n.listeners.setLimits(cfg.Limits.Connections)
	n.clients.Set(clientRequests(cfg.Limits))
	// The old health checks stop now: they share backends with the new
	// state, and a flip they saw would refresh only the old balancer.
	for _, svc := range old.list {
		svc.Close()
	}
	go n.retire(old)
	return nil
}

// sameScale reports whether every service scales the same way in a and b:
// actuators own running replicas, so changing them needs a restart.
// needsRestart names, at its line in the new file, each setting that
// differs from the running config's and that only a restart can change.
func needsRestart(cfg, old *config.Config) error {
	var changed []string
	for _, c := range []struct {
		differs bool
		key     []any
	}{
		{cfg.Listen != old.Listen, []any{"listen"}},
		{cfg.Node != old.Node, []any{"node"}},
		{cfg.Timeouts != old.Timeouts, []any{"timeouts"}},
		{cfg.Admin != old.Admin, []any{"admin"}},
		{cfg.AccessLog.File != old.AccessLog.File, []any{"access_log", "file"}},
		{cfg.Limits.MaxHeaderBytes != old.Limits.MaxHeaderBytes, []any{"limits", "max_header_bytes"}},
		{!reflect.DeepEqual(cfg.SampleBackends, old.SampleBackends), []any{"sample_backends"}},
		{!sameScale(cfg, old), []any{"services"}},
		{!reflect.DeepEqual(cfg.Telemetry, old.Telemetry), []any{"telemetry"}},
		{!reflect.DeepEqual(cfg.Mesh, old.Mesh), []any{"mesh"}},
		{!reflect.DeepEqual(cfg.Geo, old.Geo), []any{"geo"}},
	} {
		if c.differs {
			name := fmt.Sprint(c.key...)
			if len(c.key) == 2 {
				name = fmt.Sprintf("%s.%s", c.key...)
			}
			what := name
			if name == "services" {
				what = "a service's scale"
			}
			changed = append(changed, fmt.Sprintf("%s: %s changed: that needs a restart", cfg.Pos(c.key...), what))
		}
	}
	if len(changed) == 0 {
		return nil
	}
	return errors.New(strings.Join(changed, "\n"))
}

func sameScale(a, b *config.Config) bool {
	if len(a.Services) != len(b.Services) {
		return false
	}
	for name, s := range a.Services {
		o, ok := b.Services[name]
		if !ok || !reflect.DeepEqual(s.Scale, o.Scale) {
			return false
		}
	}
	return true
}
