// Package edge assembles one edge node from its parts: the listeners, the
// fleet (mesh, geo routing, GeoDNS), scaling (policies and actuators) and
// shipping (telemetry), around the request path and hot reload that never
// drops a request. New builds the parts, Start opens them in order, and
// Shutdown stops them in reverse.
package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"perigee/certs"
	"perigee/connlimit"
	"perigee/edge/accesslog"
	"perigee/edge/admin"
	"perigee/edge/admission"
	"perigee/edge/config"
	"perigee/edge/metrics"
	"perigee/edge/proxy"
	"perigee/edge/upstream"
	"perigee/files"
	"perigee/logsink"
	"perigee/via"
)

// Node is one edge node: the parts, and the config state they serve.
type Node struct {
	opts    Options
	cfg     *config.Config // the config New was given; Start opens what it names
	started time.Time

	traffic                       // what every config state shares
	state   atomic.Pointer[state] // the config in force; a reload swaps it
	reloads reloads

	accessFile *accesslog.File // access_log.file, shared by every state; nil without
	accessSink *logsink.Sink   // the buffer in front of accessFile

	listeners *listeners
	fleet     *fleet
	scaling   *scaling
	shipping  *shipping
	acme      *autocert // nil without an acme section
	admin     *admin.API
}

// traffic is what the request path shares across config states.
type traffic struct {
	certs      certs.Store
	metrics    *metrics.Metrics
	sampler    *metrics.Sampler   // one-second samples for the mesh, the static fleet and the shipper
	proxy      *proxy.Proxy       // the upstream connection pool
	gates      admission.Gates    // per-route limits and shedding, kept across reloads
	clients    *connlimit.Limiter // limits.max_requests_per_client's counts, kept across reloads
	transforms *transforms
	stop       context.CancelFunc // ends the sampler
}

// Options are what a node needs besides its config.
type Options struct {
	Log *slog.Logger
	// Load re-reads the config for a reload; nil refuses reloads.
	Load func() (*config.Config, error)
	// Version is reported to the fleet; "dev" when empty.
	Version string
	// LogDropped counts the lines Log dropped (a logsink's Dropped), for
	// perigee_log_dropped_total{log="node"}; nil when Log drops none.
	LogDropped func() uint64
}

// accessBuffer bounds the access records waiting for access_log.file, and
// logFlush how long a rotation or shutdown waits for them to be written.
const (
	accessBuffer = 1 << 20
	logFlush     = 2 * time.Second
)

// Addrs are the addresses the node actually listens on (ports resolved).
type Addrs struct {
	HTTPS, HTTP, Admin, DNS string
}

// New builds a node from a validated config: it reads the certificate and
// the admin token and assembles the parts, but opens no socket and starts
// nothing; Start does.
func New(cfg *config.Config, o Options) (*Node, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Load == nil {
		o.Load = func() (*config.Config, error) { return nil, errors.New("this node has no config file to reload") }
	}
	n := &Node{opts: o, cfg: cfg, started: time.Now()}
	log := o.Log
	var err error
	if n.acme, err = newAutocert(cfg, log); err != nil {
		return nil, err
	}
	if n.acme != nil {
		n.certs.Use(n.acme.manager)
	} else {
		cert, err := certs.Load(cfg.TLS.Cert, cfg.TLS.Key, certHosts(cfg))
		if err != nil {
			return nil, err
		}
		n.certs.Set(cert)
	}
	token, err := readToken(cfg.Admin.TokenFile)
	if err != nil {
		return nil, err
	}
	if cfg.AccessLog.File != "" {
		if n.accessFile, err = accesslog.OpenFile(cfg.AccessLog.File); err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Pos("access_log", "file"), err)
		}
		n.accessSink = logsink.New(n.accessFile, accessBuffer, logsink.Notice(jsonHandler))
	}
	n.metrics = metrics.New(n.services)
	if n.accessSink != nil {
		n.metrics.LogDropped("access", n.accessSink.Dropped)
	}
	if o.LogDropped != nil {
		n.metrics.LogDropped("node", o.LogDropped)
	}
	n.sampler = n.metrics.NewSampler(cfg.Node.ID, cfg.Node.Region, n.services)
	n.proxy = proxy.New(cfg.Timeouts.Timeouts, cfg.Node.ID, log)
	n.clients = connlimit.New("requests", clientRequests(cfg.Limits), nil)
	n.transforms = &transforms{log: log, node: n}
	n.admin = admin.New(n, promhttp.HandlerFor(n.metrics.Registry, promhttp.HandlerOpts{}), token)
	n.admin.HandleJSON("GET /transforms", func() any {
		st := n.acquire()
		defer st.release()
		return st.transformStats()
	})
	n.metrics.Transforms(func() []metrics.TransformFigures {
		st := n.acquire()
		defer st.release()
		return st.transformFigures()
	})
	n.listeners = &listeners{log: log, metrics: n.metrics}
	n.listeners.connMetrics()
	n.shipping = &shipping{log: log}
	n.fleet = &fleet{log: log}
	n.scaling = &scaling{
		log: log, region: cfg.Node.Region, current: n.state.Load, gates: &n.gates, fleet: n.fleet, ship: n.shipping, metrics: n.metrics,
		sampler: n.metrics.NewSampler(cfg.Node.ID, cfg.Node.Region, n.services), dynamic: map[string][]string{},
	}
	return n, nil
}

// Start opens the parts in order: shipping, so that nothing after it goes
// unrecorded; the fleet, which the routes steer through; the first config
// state; scaling, which acts on that state; the listeners; and last ACME,
// whose TLS-ALPN-01 challenges the HTTPS listener answers. If a
// part fails, those already open are stopped again. Start runs once.
func (n *Node) Start() (err error) {
	ctx, stop := context.WithCancel(context.Background())
	n.stop = stop
	defer func() {
		if err != nil {
			n.stopParts(context.Background())
		}
	}()
	cfg := n.cfg
	if err := n.shipping.start(cfg, n.admin); err != nil {
		return err
	}
	if err := n.fleet.start(cfg, n.opts.Version, n.sampler, n.metrics, n.shipping, n.admin); err != nil {
		return err
	}
	st, err := n.buildState(ctx, cfg, nil)
	if err != nil {
		return err
	}
	n.state.Store(st)
	if err := n.scaling.start(cfg, n.admin); err != nil {
		return err
	}
	go n.sampler.Run(ctx, time.Second, n.fleet.shareLoad, n.shipping.sample)
	if err := n.listeners.start(cfg, n, notProxied(n.admin, cfg.Node.ID), &n.certs); err != nil {
		return err
	}
	// The HTTPS listener answers TLS-ALPN-01, so ACME starts after it.
	return n.acme.start(cfg, n.listeners.addrs.HTTPS, n.admin, n.metrics, n.listeners.limiter)
}

// Shutdown stops accepting, lets requests in flight finish until ctx ends
// (HTTP/3 clients get GOAWAY), then stops the other parts in the reverse
// of the order Start opened them.
func (n *Node) Shutdown(ctx context.Context) error {
	err := n.listeners.drain(ctx, n.metrics.InFlight)
	return errors.Join(err, n.stopParts(ctx))
}

// stopParts stops every part but the listeners, latest started first.
func (n *Node) stopParts(ctx context.Context) error {
	n.listeners.close()
	n.acme.close(ctx)
	if n.stop != nil {
		n.stop() // the sampler
	}
	errs := []error{n.scaling.close(ctx)}
	if st := n.state.Load(); st != nil {
		n.retire(st)
	}
	n.fleet.close()
	n.shipping.close(ctx)
	n.proxy.Close()
	errs = append(errs, n.transforms.close(ctx))
	if n.accessFile != nil { // the last state has retired
		flush, cancel := context.WithTimeout(context.Background(), logFlush)
		errs = append(errs, n.accessSink.Close(flush), n.accessFile.Close())
		cancel()
	}
	return errors.Join(errs...)
}

func jsonHandler(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) }

// accessLogger writes a state's access records to the node's access log
// file, or with the node's log when the config names none.
func (n *Node) accessLogger(cfg *config.Config) *accesslog.Logger {
	if !*cfg.AccessLog.Enabled {
		return nil
	}
	if n.accessFile != nil {
		return accesslog.New(slog.New(jsonHandler(n.accessSink)), *cfg.AccessLog.Sample)
	}
	return accesslog.New(n.opts.Log, *cfg.AccessLog.Sample)
}

// ReopenLogs reopens the access log file at its path, for logrotate
// (serve does it on SIGUSR1). The records logged before it go to the old
// file if they can be written within logFlush; a stalled one is given up.
func (n *Node) ReopenLogs() error {
	if n.accessFile == nil {
		return nil
	}
	flush, cancel := context.WithTimeout(context.Background(), logFlush)
	defer cancel()
	n.accessSink.Flush(flush) // a dead old file must not keep the new one from opening
	return n.accessFile.Reopen()
}

// certHosts are the names a generated dev certificate covers.
func certHosts(cfg *config.Config) []string {
	var hosts []string
	if u, err := url.Parse(cfg.Node.PublicURL); err == nil && u.Hostname() != "" {
		hosts = append(hosts, u.Hostname())
	}
	if h, _, err := net.SplitHostPort(cfg.Listen.HTTPS); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return hosts
}

func readToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	tok, err := files.ReadToken(path)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	return tok, nil
}

// Addrs returns where the node listens.
func (n *Node) Addrs() Addrs {
	a := n.listeners.addrs
	a.DNS = n.fleet.dnsAddr
	return a
}

// Certificate is the certificate the node serves.
func (n *Node) Certificate() *tls.Certificate { return n.certs.Current() }

// SPKIHash is the base64 SHA-256 of the served certificate's public key.
func (n *Node) SPKIHash() string { return certs.SPKIHash(n.certs.Current()) }

// Admin is the admin API, for mounting more endpoints.
func (n *Node) Admin() *admin.API { return n.admin }

// Sampler cuts the node's load samples.
func (n *Node) Sampler() *metrics.Sampler { return n.sampler }

// services lists the live services; none before the first state is built.
func (n *Node) services() []*upstream.Service {
	if st := n.state.Load(); st != nil {
		return st.list
	}
	return nil
}

// notProxied refuses a request that came to the admin API through this
// node's own proxy. A backend that is the admin listener (a config slip, or
// a registry pointing there) would open the API to every client, and
// without a token it answers whatever comes from loopback.
func notProxied(adm http.Handler, node string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if via.PassedThrough(r.Header, node) {
			admin.WriteJSON(w, http.StatusForbidden, map[string]string{"error": "the admin API does not answer requests proxied by this node"})
			return
		}
		adm.ServeHTTP(w, r)
	})
}

// clientRequests are the bounds of the requests in flight: one client's,
// and no other (a node's requests are bounded by its connections and
// each service's max_requests).
func clientRequests(l config.Limits) connlimit.Settings {
	return connlimit.Settings{MaxTotal: connlimit.MaxBound, MaxPerAddress: max(1, l.MaxRequestsPerClient)}
}
