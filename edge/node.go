// Package edge assembles one edge node from its parts: listeners for
// HTTP/1.1, HTTP/2 and HTTP/3, the router, the proxy and upstream pools, the
// admin API, and hot reload that never drops a request.
package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"perigee/certs"
	"perigee/edge/accesslog"
	"perigee/edge/admin"
	"perigee/edge/admission"
	"perigee/edge/config"
	"perigee/edge/metrics"
	"perigee/edge/proxy"
	"perigee/edge/samplebackend"
	"perigee/edge/upstream"
	"perigee/geo"
	"perigee/geo/rtt"
	"perigee/mesh"
	"perigee/policies"
	"perigee/policies/actuator"
	"perigee/runtime/wasm"
	"perigee/telemetry/ship"
)

// Node is one running edge node.
type Node struct {
	log     *slog.Logger
	load    func() (*config.Config, error) // re-reads the config for a reload
	state   atomic.Pointer[state]
	certs   certs.Store
	proxy   *proxy.Proxy
	metrics *metrics.Metrics
	sampler *metrics.Sampler
	admin   *admin.API
	started time.Time

	https, plain, adminSrv *http.Server
	h3                     *http3.Server
	udp                    net.PacketConn
	addrs                  Addrs

	reloadMu   sync.Mutex
	lastReload ReloadResult
	stop       context.CancelFunc // ends the background work

	gates     admission.Gates
	dynamicMu sync.Mutex          // held while backends are added or a state is built
	dynamic   map[string][]string // backends actuators added, by service

	hostOnce sync.Once
	host     *wasm.Host
	hostErr  error

	engine        *policies.Engine
	actuators     map[string]actuator.Actuator
	policySampler *metrics.Sampler
	shipper       *ship.Shipper
	shipped       chan struct{} // closed when the shipper has flushed and stopped

	cluster  *mesh.Cluster    // nil without a mesh section
	router   *geo.Router      // nil without a geo section
	learner  *rtt.Learner     // client round trips, with geo
	static   *geo.StaticFleet // the configured fleet, when there is no mesh
	nodesAPI http.Handler     // GET /.well-known/perigee/nodes, with geo
	country  *countryTagger   // sets X-Perigee-Country, with geo
}

// Addrs are the addresses the node actually listens on (ports resolved).
type Addrs struct {
	HTTPS, HTTP, Admin, DNS string
}

// ReloadResult is the outcome of the latest reload, for GET /status.
type ReloadResult struct {
	At    time.Time `json:"at,omitzero"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
}

// New builds a node from cfg, opens its listeners and starts serving; load
// re-reads the config on reload. Shutdown stops it.
func New(cfg *config.Config, load func() (*config.Config, error), log *slog.Logger) (n *Node, err error) {
	ctx, stop := context.WithCancel(context.Background())
	n = &Node{log: log, load: load, started: time.Now(), stop: stop, dynamic: map[string][]string{}}
	started := n // the error returns below set n to nil
	defer func() {
		if err != nil { // undo whatever started, in reverse
			started.closeListeners()
			started.closeActuators(context.Background())
			if st := started.state.Load(); st != nil {
				started.retire(st)
			}
			started.leaveMesh()
			stop()
		}
	}()
	n.metrics = metrics.New(n.services)
	n.proxy = proxy.New(cfg.Timeouts.Timeouts, cfg.Node.ID, log)
	cert, err := certs.Load(cfg.TLS.Cert, cfg.TLS.Key, certHosts(cfg))
	if err != nil {
		return nil, err
	}
	n.certs.Set(cert)
	n.sampler = n.metrics.NewSampler(cfg.Node.ID, cfg.Node.Region, n.services)
	if err := n.startMesh(ctx, cfg); err != nil {
		return nil, err
	}
	if err := n.startGeo(ctx, cfg); err != nil {
		return nil, err
	}
	st, err := n.buildState(ctx, cfg, nil)
	if err != nil {
		return nil, err
	}
	n.state.Store(st)
	if err := n.startTelemetry(ctx, cfg); err != nil {
		return nil, err
	}
	if err := n.mountAdmin(cfg); err != nil {
		return nil, err
	}
	if err := n.startPolicies(ctx, cfg); err != nil {
		return nil, err
	}
	if err := n.listen(cfg); err != nil {
		return nil, err
	}
	go n.forwardMeshEvents(ctx)
	go n.sampler.Run(ctx, time.Second, n.sampleConsumers()...)
	return n, nil
}

func accessLogger(cfg *config.Config, log *slog.Logger) *accesslog.Logger {
	if !*cfg.AccessLog.Enabled {
		return nil
	}
	return accesslog.New(log, *cfg.AccessLog.Sample)
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

// Addrs returns where the node listens.
func (n *Node) Addrs() Addrs { return n.addrs }

// Certificate is the certificate the node serves.
func (n *Node) Certificate() *tls.Certificate { return n.certs.Current() }

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

func (n *Node) listen(cfg *config.Config) error {
	l, t := cfg.Listen, cfg.Timeouts
	if l.HTTPS != "" {
		tcp, udp, err := listenSamePort(l.HTTPS)
		if err != nil {
			return err
		}
		n.udp = udp
		n.addrs.HTTPS = tcp.Addr().String()
		_, port, _ := net.SplitHostPort(n.addrs.HTTPS)
		altSvc := `h3=":` + port + `"; ma=86400`
		n.https = n.server(t, cfg.Limits, withAltSvc(altSvc, n))
		n.https.TLSConfig = n.certs.TLSConfig("h2", "http/1.1")
		n.https.ConnContext = rtt.ConnContext
		go n.serve("https", func() error { return n.https.ServeTLS(tcp, "", "") })
		n.h3 = &http3.Server{
			Handler:        n,
			TLSConfig:      http3.ConfigureTLSConfig(n.certs.TLSConfig()),
			QUICConfig:     &quic.Config{MaxIdleTimeout: t.Idle.D(), Allow0RTT: false},
			MaxHeaderBytes: int(cfg.Limits.MaxHeaderBytes) + 4096,
			IdleTimeout:    t.Idle.D(),
			ConnContext:    rtt.QUICConnContext,
		}
		go n.serve("http3", func() error { return n.h3.Serve(udp) })
	}
	if l.HTTP != "" {
		ln, err := net.Listen("tcp", l.HTTP)
		if err != nil {
			return fmt.Errorf("listen.http: %w", err)
		}
		n.addrs.HTTP = ln.Addr().String()
		n.plain = n.server(t, cfg.Limits, n)
		n.plain.Protocols = new(http.Protocols)
		n.plain.Protocols.SetHTTP1(true)
		n.plain.Protocols.SetUnencryptedHTTP2(true)
		go n.serve("http", func() error { return n.plain.Serve(ln) })
	}
	ln, err := net.Listen("tcp", l.Admin)
	if err != nil {
		return fmt.Errorf("listen.admin: %w", err)
	}
	n.addrs.Admin = ln.Addr().String()
	n.adminSrv = &http.Server{Handler: n.admin, ReadHeaderTimeout: t.ReadHeader.D()}
	go n.serve("admin", func() error { return n.adminSrv.Serve(ln) })
	return nil
}

func readToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin.token_file %s is empty", path)
	}
	return tok, nil
}

func (n *Node) server(t config.Timeouts, lim config.Limits, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader.D(),
		IdleTimeout:       t.Idle.D(),
		// The handler answers oversized headers with a JSON 431; this hard
		// cap, a little above, protects the parser itself.
		MaxHeaderBytes: int(lim.MaxHeaderBytes) + 4096,
		ErrorLog:       slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
}

func (n *Node) serve(name string, run func() error) {
	if err := run(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		n.log.Error("listener stopped", "listener", name, "err", err)
	}
}

// listenSamePort binds TCP and UDP on one port. With port 0 the kernel picks
// the TCP port, which may be taken on UDP: then try another.
func listenSamePort(addr string) (net.Listener, net.PacketConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen.https: %w", err)
	}
	for attempt := 0; ; attempt++ {
		tcp, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen.https (TCP): %w", err)
		}
		_, got, _ := net.SplitHostPort(tcp.Addr().String())
		udp, err := net.ListenPacket("udp", net.JoinHostPort(host, got))
		if err == nil {
			return tcp, udp, nil
		}
		tcp.Close()
		if port != "0" || attempt == 10 {
			return nil, nil, fmt.Errorf("listen.https (UDP for HTTP/3): %w", err)
		}
	}
}

// withAltSvc advertises HTTP/3 on every TCP response.
func withAltSvc(value string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Alt-Svc", value)
		next.ServeHTTP(w, r)
	})
}

// StartSampleBackends runs the config's built-in demo backends until ctx ends.
func StartSampleBackends(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	for _, sb := range cfg.SampleBackends {
		ln, err := net.Listen("tcp", sb.Listen)
		if err != nil {
			return fmt.Errorf("sample_backends %s: %w", sb.Name, err)
		}
		o := samplebackend.Options{Name: sb.Name, Latency: sb.Latency.D(), ErrorRate: sb.ErrorRate, Size: int(sb.Size)}
		go func() {
			if err := samplebackend.ServeListener(ctx, ln, o); err != nil {
				log.Error("sample backend stopped", "name", sb.Name, "err", err)
			}
		}()
	}
	return nil
}

// Reload re-reads the config and swaps it in. A config that does not load
// or validate, or changes what only a restart can change, is refused and the
// old one keeps serving.
func (n *Node) Reload() error {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	err := n.reload()
	n.lastReload = ReloadResult{At: time.Now(), OK: err == nil}
	if err != nil {
		n.lastReload.Error = err.Error()
		n.log.Error("reload refused; the old config keeps serving", "err", err)
		return err
	}
	n.log.Info("config reloaded")
	return nil
}

func (n *Node) reload() error {
	cfg, err := n.load()
	if err != nil {
		return err
	}
	old := n.state.Load()
	if cfg.Listen != old.cfg.Listen {
		return fmt.Errorf("listen addresses changed (%+v → %+v): that needs a restart", old.cfg.Listen, cfg.Listen)
	}
	if cfg.Node != old.cfg.Node || cfg.Timeouts != old.cfg.Timeouts || cfg.Admin != old.cfg.Admin ||
		cfg.Limits.MaxHeaderBytes != old.cfg.Limits.MaxHeaderBytes {
		return errors.New("node, timeouts, admin or limits.max_header_bytes changed: that needs a restart")
	}
	if !reflect.DeepEqual(cfg.SampleBackends, old.cfg.SampleBackends) {
		return errors.New("sample_backends changed: that needs a restart")
	}
	if !sameScale(cfg, old.cfg) || !reflect.DeepEqual(cfg.Telemetry, old.cfg.Telemetry) ||
		!reflect.DeepEqual(cfg.Mesh, old.cfg.Mesh) || !reflect.DeepEqual(cfg.Geo, old.cfg.Geo) {
		return errors.New("services' scale, telemetry, mesh or geo changed: that needs a restart")
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
	specs := policySpecs(cfg)
	n.dynamicMu.Lock()
	defer n.dynamicMu.Unlock()
	st, err := n.buildState(context.Background(), cfg, old)
	if err != nil {
		return err
	}
	if err := n.engine.Reload(specs...); err != nil {
		n.retire(st)
		return fmt.Errorf("%s: %w", cfg.Pos("policies"), err)
	}
	if cert != nil {
		n.certs.Set(cert)
	}
	n.state.Store(st)
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

// Shutdown stops accepting, lets requests in flight finish until ctx ends
// (HTTP/3 clients get GOAWAY), then stops the rest.
func (n *Node) Shutdown(ctx context.Context) error {
	var servers []interface{ Shutdown(context.Context) error }
	for _, s := range []*http.Server{n.https, n.plain} {
		if s != nil {
			servers = append(servers, s)
		}
	}
	if n.h3 != nil {
		servers = append(servers, n.h3)
	}
	var wg sync.WaitGroup
	var errs []error
	var mu sync.Mutex
	if n.h3 != nil {
		// HTTP/3 clients may keep a connection open after GOAWAY; once the
		// last request is done there is nothing left to wait for.
		go func() {
			for n.metrics.InFlight() > 0 && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
			n.h3.Close()
		}()
	}
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Shutdown(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	n.closeListeners()
	n.leaveMesh()
	n.stop() // policies, sampler and shipper
	if n.shipped != nil {
		select { // the shipper flushes what it can, within the drain deadline
		case <-n.shipped:
		case <-ctx.Done():
		}
	}
	errs = append(errs, n.closeActuators(ctx))
	n.retire(n.state.Load())
	n.proxy.Close()
	if n.host != nil {
		errs = append(errs, n.host.Close(ctx))
	}
	return errors.Join(errs...)
}

// closeActuators stops the replicas actuators started (the process
// actuator's children).
func (n *Node) closeActuators(ctx context.Context) error {
	var errs []error
	for name, a := range n.actuators {
		if err := a.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping %s replicas: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// leaveMesh tells the fleet this node is going, so that peers show it as
// left at once rather than dead after the failure-detection time.
func (n *Node) leaveMesh() {
	if n.cluster == nil {
		return
	}
	if err := n.cluster.Leave(2 * time.Second); err != nil {
		n.log.Warn("leaving the mesh", "err", err)
	}
	n.cluster.Shutdown()
}

func (n *Node) closeListeners() {
	if n.h3 != nil {
		n.h3.Close()
	}
	if n.udp != nil {
		n.udp.Close()
	}
	for _, s := range []*http.Server{n.https, n.plain, n.adminSrv} {
		if s != nil {
			s.Close()
		}
	}
}

// SPKIHash is the base64 SHA-256 of the served certificate's public key.
func (n *Node) SPKIHash() string { return certs.SPKIHash(n.certs.Current()) }
