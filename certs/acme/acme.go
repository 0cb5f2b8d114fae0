// Package acme gets and renews certificates from an ACME (RFC 8555) CA for
// a list of hostnames, with certmagic: HTTP-01 and TLS-ALPN-01 challenges,
// OCSP stapling, and a storage directory that keeps certificates across
// restarts and, shared between nodes, lets one node issue a name while the
// others wait on its lock and then load what it stored. It owns the `acme:`
// settings; the node runs the listeners.
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"go.uber.org/zap"

	"perigee/clip"
	"perigee/files"
)

// Manager keeps a certificate for each configured host.
type Manager struct {
	conf  Config
	roots *x509.CertPool // for the CA's API; nil trusts the system's
	log   *slog.Logger
	run   atomic.Pointer[running] // set by Start
	stop  sync.Once

	obtained, failed atomic.Int64
}

// running is certmagic at work: its cache keeps a maintenance goroutine.
type running struct {
	cache   *certmagic.Cache
	magic   *certmagic.Config
	issuer  *certmagic.ACMEIssuer
	cancel  context.CancelFunc
	stopped chan struct{} // closed once the maintenance goroutine has ended
}

// maxRoots bounds the ca_roots file: a few thousand certificates.
const maxRoots = 1 << 20

// LoadRoots reads a ca_roots file as New does, for `perigee validate`,
// which must not create the storage directory New does.
func LoadRoots(path string) (*x509.CertPool, error) {
	pem, err := files.Read(path, maxRoots)
	if err != nil {
		return nil, fmt.Errorf("acme.ca_roots: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("acme.ca_roots: %s holds no PEM certificate", path)
	}
	return roots, nil
}

// New builds a manager from validated settings. It reads CARoots and
// creates the storage directory, but starts nothing and talks to no CA
// until Start.
func New(c Config, log *slog.Logger) (*Manager, error) {
	m := &Manager{conf: c, log: log}
	if c.CARoots != "" {
		var err error
		if m.roots, err = LoadRoots(c.CARoots); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(c.Storage, 0o700); err != nil {
		return nil, fmt.Errorf("acme.storage: %w", err)
	}
	return m, nil
}

// Start loads what the storage holds and obtains or renews the rest in the
// background, then keeps them renewed until Stop. httpsAddr and httpAddr
// are where the node listens (after binding) for TLS-ALPN-01 and HTTP-01;
// empty leaves that challenge out. The node's own listeners answer the
// challenges: certmagic, pointed at their ports, finds them taken and
// leaves the answers to GetCertificate and HTTPHandler. So Start must come
// after they are open, or certmagic would bind the ports itself.
func (m *Manager) Start(httpsAddr, httpAddr string) error {
	c := m.conf
	iss := certmagic.ACMEIssuer{
		CA:                      c.CA,
		Email:                   c.Email,
		Agreed:                  true,
		TrustedRoots:            m.roots,
		HTTPProxy:               noRedirect,
		DisableHTTPChallenge:    !c.Uses(HTTP01) || httpAddr == "",
		DisableTLSALPNChallenge: !c.Uses(TLSALPN01) || httpsAddr == "",
	}
	if err := solveAt(httpsAddr, &iss.ListenHost, &iss.AltTLSALPNPort); err != nil {
		return err
	}
	if err := solveAt(httpAddr, &iss.ListenHost, &iss.AltHTTPPort); err != nil {
		return err
	}
	// certmagic logs through zap; what an operator needs it reports as
	// events, which go to our log instead.
	quiet := zap.NewNop()
	iss.Logger = quiet
	r := &running{stopped: make(chan struct{})}
	r.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return r.magic, nil },
		RenewCheckInterval: c.RenewCheck.D(),
		OCSPCheckInterval:  c.RenewCheck.D(),
		Logger:             quiet,
	})
	r.magic = certmagic.New(r.cache, certmagic.Config{
		Storage: boundedStorage{&certmagic.FileStorage{Path: c.Storage}, m.log},
		// The OCSP responder is the CA's, named in what it issues, and
		// certmagic asks it with http.DefaultClient, which never gives
		// up, unless a proxy is set: then its client has a 30 s timeout.
		// One that never answered held the certificate out of the cache
		// (never served) and the maintenance loop (nothing renewed).
		OCSP:           certmagic.OCSPConfig{HTTPProxy: noRedirect},
		OnEvent:        m.event,
		ShouldEmitFunc: func(name string) bool { return strings.HasPrefix(name, "cert_") },
		Logger:         quiet,
	})
	r.issuer = certmagic.NewACMEIssuer(r.magic, iss)
	r.magic.Issuers = []certmagic.Issuer{boundedIssuer{r.issuer, c.IssueTimeout.D()}}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	m.run.Store(r)
	if err := r.magic.ManageAsync(ctx, c.Hosts); err != nil {
		return fmt.Errorf("acme: %w", err)
	}
	return nil
}

// noRedirect is the proxy of the clients that ask the CA and its OCSP
// responder (whose URL the certificate names): the environment's, and no
// redirect, which certmagic's clients followed anywhere, to plain HTTP or
// to what only this host may reach (a cloud's metadata service), the
// answer going into the error and the log. ACME and OCSP define none. It
// is the one hook certmagic gives into each request its clients make.
func noRedirect(r *http.Request) (*url.URL, error) {
	if r.Response != nil {
		return nil, fmt.Errorf("%s answered %s, a redirect to %s: not followed", r.Response.Request.URL.Redacted(), r.Response.Status, r.URL.Redacted())
	}
	return http.ProxyFromEnvironment(r)
}

// boundedIssuer gives each attempt at an issuance at most timeout.
// certmagic bounds none, and acmez sleeps as long as the CA's Retry-After
// says (years, from a hostile or broken CA) while certmagic holds the
// storage lock every node sharing it waits on. Its other methods
// (PreCheck, Revoke, GetRenewalInfo) are the ACME issuer's.
type boundedIssuer struct {
	*certmagic.ACMEIssuer
	timeout time.Duration
}

func (b boundedIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, b.timeout, errIssueTimeout)
	defer cancel()
	c, err := b.ACMEIssuer.Issue(ctx, csr)
	if err != nil && errors.Is(context.Cause(ctx), errIssueTimeout) {
		return nil, fmt.Errorf("the CA did not issue within acme.issue_timeout (%v): %w", b.timeout, err)
	}
	return c, err
}

var errIssueTimeout = errors.New("acme.issue_timeout")

// maxStored bounds a file read back from storage: certificates, keys,
// staples and their metadata are a few KiB.
const maxStored = 1 << 20

// boundedStorage is certmagic's file storage, but reads within bounds.
// The directory may be shared by a fleet, and certmagic read it with
// os.ReadFile: a huge file where a certificate belongs was read whole by
// every node that loads it, a FIFO hung its host's loading for good, and
// certmagic reports neither (its logs are off), so the refusal is logged
// here, naming the file. A file that cannot be opened is not: clients
// name the challenge files looked up (by SNI and Host), and one too long
// to be a file name would have each request logged.
type boundedStorage struct {
	*certmagic.FileStorage
	log *slog.Logger
}

var _ certmagic.TryLocker = boundedStorage{}

func (s boundedStorage) Load(_ context.Context, key string) ([]byte, error) {
	b, err := files.Read(s.Filename(key), maxStored)
	var open *fs.PathError
	if err != nil && !(errors.As(err, &open) && open.Op == "open") {
		s.log.Error("acme.storage: stored file refused", "err", err)
	}
	return b, err
}

// solveAt points a challenge solver at a listener of ours.
func solveAt(addr string, host *string, port *int) error {
	if addr == "" {
		return nil
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("acme: %w", err)
	}
	if *port, err = strconv.Atoi(p); err != nil {
		return fmt.Errorf("acme: port %q: %w", p, err)
	}
	*host = h
	return nil
}

// Stop ends renewals and OCSP refreshes; an issuance under way is
// abandoned. It waits for certmagic's maintenance goroutine until ctx
// ends: that goroutine may be in a request to the CA (an OCSP or ARI
// refresh, which takes from 30 s to minutes against one that does not
// answer, and which nothing cancels), and then finishes it alone.
func (m *Manager) Stop(ctx context.Context) {
	r := m.run.Load()
	if r == nil {
		return
	}
	m.stop.Do(func() {
		r.cancel()
		go func() {
			r.cache.Stop()
			close(r.stopped)
		}()
	})
	select {
	case <-r.stopped:
	case <-ctx.Done():
		m.log.Warn("certificate maintenance is still in a request to the CA; not waiting for it", "err", context.Cause(ctx))
	}
}

// GetCertificate serves the host's certificate, or the TLS-ALPN-01
// challenge certificate when the CA asks for one.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	r := m.run.Load()
	if r == nil {
		return nil, errNotStarted
	}
	return r.magic.GetCertificate(hello)
}

var errNotStarted = errors.New("acme: no certificates yet")

// NextProtos are the ALPN protocols the HTTPS listener must offer besides
// its own for the TLS-ALPN-01 challenge.
func (m *Manager) NextProtos() []string {
	if m.conf.Uses(TLSALPN01) {
		return []string{acmez.ACMETLS1Protocol}
	}
	return nil
}

// HTTPHandler answers HTTP-01 challenges and redirects every other request
// for a managed host to HTTPS on httpsPort ("443" leaves the port out).
// Other hosts get 404: we hold no certificate to redirect them to. A
// request target that is no path ("*", "x:@evil.example") gets 400.
func (m *Manager) HTTPHandler(httpsPort string) http.Handler {
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !slices.ContainsFunc(m.conf.Hosts, func(h string) bool { return strings.EqualFold(h, host) }) {
			http.Error(w, "no such host here", http.StatusNotFound)
			return
		}
		if httpsPort != "443" {
			host = net.JoinHostPort(host, httpsPort)
		}
		// The target is spliced after the host, so it must be a path: an
		// opaque one ("x:@evil.example") became the userinfo, a longer
		// host name or another port.
		if r.URL.Opaque != "" || !strings.HasPrefix(r.URL.Path, "/") && r.URL.Path != "" {
			http.Error(w, "request target must be a path", http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if run := m.run.Load(); run != nil && run.issuer.HandleHTTPChallenge(w, r) {
			return
		}
		redirect(w, r)
	})
}

// Status is one managed host's certificate, for the admin API.
type Status struct {
	Host     string    `json:"host"`
	Serial   string    `json:"serial,omitempty"`
	Issuer   string    `json:"issuer,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	Stapled  bool      `json:"ocsp_stapled"`
}

// Stats is what the manager has done and holds.
type Stats struct {
	Obtained int64    `json:"obtained"` // issuances and renewals by this node
	Failed   int64    `json:"failed"`
	Hosts    []Status `json:"hosts"`
}

// Stats reports each host's certificate as served now.
func (m *Manager) Stats() Stats {
	s := Stats{Obtained: m.obtained.Load(), Failed: m.failed.Load()}
	r := m.run.Load()
	for _, h := range m.conf.Hosts {
		st := Status{Host: h}
		var certs []certmagic.Certificate
		if r != nil {
			// certmagic manages, and indexes, the lower-case spelling.
			certs = r.cache.AllMatchingCertificates(strings.ToLower(h))
		}
		if len(certs) > 0 && certs[0].Leaf != nil {
			c := certs[0]
			st.Serial = c.Leaf.SerialNumber.Text(16)
			st.Issuer = c.Leaf.Issuer.CommonName
			st.NotAfter = c.Leaf.NotAfter
			st.Stapled = len(c.OCSPStaple) > 0
		}
		s.Hosts = append(s.Hosts, st)
	}
	return s
}

func (m *Manager) event(_ context.Context, name string, data map[string]any) error {
	switch name {
	case "cert_obtaining":
		m.log.Info("obtaining certificate", "host", data["identifier"], "renewal", data["renewal"])
	case "cert_obtained":
		m.obtained.Add(1)
		m.log.Info("certificate obtained", "host", data["identifier"], "renewal", data["renewal"], "issuer", data["issuer"])
	case "cert_failed":
		m.failed.Add(1)
		m.log.Warn("certificate not obtained", "host", data["identifier"], "renewal", data["renewal"], "err", clip.Text(fmt.Sprint(data["error"]), maxLogged))
	case "cert_ocsp_revoked":
		m.log.Error("certificate revoked, replacing it", "host", data["subjects"])
	}
	return nil
}

// maxLogged bounds the text of a failure in the log: acmez puts the whole
// body of a CA's error answer into its error, and a CA may answer with
// megabytes, at every attempt.
const maxLogged = 2 << 10
