package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
	"golang.org/x/crypto/ocsp"

	"perigee/certs/acme"
	"perigee/certs/acme/acmetest"
	"perigee/files/filestest"
)

const acmeHost = "www.perigee.test"

// acmeYAML is a node on https whose acme section trusts pebble's API
// certificate and keeps what it gets in storage; extra is more of the
// acme section.
func acmeYAML(t *testing.T, pb *acmetest.Pebble, https, storage, extra string) string {
	return fmt.Sprintf(`listen: {https: %q, admin: "127.0.0.1:0"}
access_log: {enabled: false}
acme:
  hosts: [%s]
  email: ops@perigee.test
  ca: %q
  ca_roots: %q
  storage: %q
  renew_check: 1s
%sservices:
  api:
    backends: [{url: %q}]
routes:
  - {name: api, match: {path_prefix: /}, service: api}
`, https, acmeHost, pb.Directory, pb.ServerCA, storage, extra, serveBackend(t, viaEcho))
}

// pebbleClients trust only the root pebble signs with and ask for acmeHost
// by SNI, one per protocol.
func pebbleClients(t *testing.T, roots *x509.CertPool) []protoClient {
	conf := func() *tls.Config { return &tls.Config{RootCAs: roots, ServerName: acmeHost} }
	h1 := &http.Transport{TLSClientConfig: conf(), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	h2 := &http.Transport{TLSClientConfig: conf(), ForceAttemptHTTP2: true}
	h2.Protocols = new(http.Protocols)
	h2.Protocols.SetHTTP2(true)
	h3 := &http3.Transport{TLSClientConfig: conf()}
	t.Cleanup(func() { h1.CloseIdleConnections(); h2.CloseIdleConnections(); h3.Close() })
	return []protoClient{
		{"HTTP/1.1", &http.Client{Transport: h1, Timeout: 30 * time.Second}, 1},
		{"HTTP/2", &http.Client{Transport: h2, Timeout: 30 * time.Second}, 2},
		{"HTTP/3", &http.Client{Transport: h3, Timeout: 30 * time.Second}, 3},
	}
}

// fresh makes a new connection for each request, so each handshake shows
// the certificate served now.
func fresh(roots *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: acmeHost}, DisableKeepAlives: true,
	}}
}

// served is the serial of the certificate the node serves now to a client
// that trusts only pebble's root, or "" while it has none.
func served(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	leaf := resp.TLS.PeerCertificates[0]
	if !slices.Contains(leaf.DNSNames, acmeHost) {
		return "", fmt.Errorf("certificate for %v, not %s", leaf.DNSNames, acmeHost)
	}
	return leaf.SerialNumber.Text(16), nil
}

// waitServed waits until the node serves a certificate other than not.
func waitServed(t *testing.T, c *http.Client, url, not string) string {
	t.Helper()
	// A bound on a hang, not on speed: a stalled OCSP responder alone
	// holds a certificate back 30 s, and twice that on a loaded CI core.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		serial, err := served(c, url)
		if err == nil && serial != not {
			return serial
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new certificate from pebble served at %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func stopNode(t *testing.T, n *testNode) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// A node gets its certificate from pebble over HTTP-01, serves it over
// HTTP/1.1, HTTP/2 and HTTP/3 to clients that trust only pebble's root,
// redirects plain HTTP to HTTPS, and after a restart serves the stored
// certificate without asking the CA again.
func TestACMEHTTP01CertificateServedOnEveryProtocolAndKeptAcrossRestart(t *testing.T) {
	https, plain := acmetest.FreeAddr(t), acmetest.FreeAddr(t)
	pb := acmetest.Start(t, acmetest.Options{HTTPAddr: plain, TLSAddr: https})
	storage := t.TempDir()
	yaml := acmeYAML(t, pb, https, storage, fmt.Sprintf("  challenges: [http-01]\n  http_listen: %q\n", plain))
	n := startNode(t, yaml)
	roots := pb.Roots(t)
	clients := pebbleClients(t, roots)
	url := "https://" + https + "/hello"
	serial := waitServed(t, fresh(roots), url, "")
	for _, pc := range clients {
		resp, body := get(t, pc.client, url)
		if resp.StatusCode != 200 || resp.ProtoMajor != pc.proto || !strings.Contains(body, "via=") {
			t.Fatalf("%s: %s %s %q", pc.name, resp.Proto, resp.Status, body)
		}
		if got := resp.TLS.PeerCertificates[0].SerialNumber.Text(16); got != serial {
			t.Fatalf("%s serves certificate %s, HTTP/1.1 %s", pc.name, got, serial)
		}
	}

	// The HTTP-01 listener sends browsers to HTTPS, and only for its hosts.
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	_, httpsPort, _ := strings.Cut(https, ":")
	for host, want := range map[string]string{acmeHost: "https://" + acmeHost + ":" + httpsPort + "/a/b?c=d", "other.perigee.test": ""} {
		req, _ := http.NewRequest("GET", "http://"+plain+"/a/b?c=d", nil)
		req.Host = host
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); want != "" && (resp.StatusCode != http.StatusPermanentRedirect || loc != want) {
			t.Fatalf("Host %s: %s to %q, want 308 to %q", host, resp.Status, loc, want)
		} else if want == "" && resp.StatusCode != http.StatusNotFound {
			t.Fatalf("Host %s: %s, want 404", host, resp.Status)
		}
	}
	resp, body := get(t, http.DefaultClient, "http://"+n.Addrs().Admin+"/certificates")
	var st acme.Stats
	if err := json.Unmarshal([]byte(body), &st); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /certificates: %s %q %v", resp.Status, body, err)
	}
	if st.Obtained != 1 || len(st.Hosts) != 1 || st.Hosts[0].Host != acmeHost || st.Hosts[0].Serial != serial || !strings.HasPrefix(st.Hosts[0].Issuer, "Pebble") {
		t.Fatalf("GET /certificates: %s", body)
	}
	stopNode(t, n)

	again := startNode(t, yaml)
	if got := waitServed(t, fresh(roots), url, ""); got != serial {
		t.Fatalf("after a restart the node serves %s, not the stored %s", got, serial)
	}
	if st := again.acme.manager.Stats(); st.Obtained != 0 {
		t.Fatalf("the restarted node asked the CA again: %+v", st)
	}
}

// With TLS-ALPN-01 only and no plain HTTP listener, the HTTPS listener
// answers the challenge itself.
func TestACMETLSALPN01OnTheHTTPSListener(t *testing.T) {
	https := acmetest.FreeAddr(t)
	pb := acmetest.Start(t, acmetest.Options{HTTPAddr: acmetest.FreeAddr(t), TLSAddr: https})
	yaml := acmeYAML(t, pb, https, t.TempDir(), "  challenges: [tls-alpn-01]\n")
	n := startNode(t, yaml)
	roots := pb.Roots(t)
	clients := pebbleClients(t, roots)
	serial := waitServed(t, fresh(roots), "https://"+https+"/", "")
	if got, err := served(clients[2].client, "https://"+https+"/"); err != nil || got != serial {
		t.Fatalf("HTTP/3 serves %s (%v), TCP %s", got, err, serial)
	}
	// A reload keeps the certificate; one that changes acme is refused.
	n.rewrite(yaml)
	if err := n.Reload(); err != nil {
		t.Fatal(err)
	}
	n.rewrite(strings.Replace(yaml, "renew_check: 1s", "renew_check: 2s", 1))
	if err := n.Reload(); err == nil || !strings.Contains(err.Error(), "acme changed: that needs a restart") {
		t.Fatalf("reload that changes acme: %v", err)
	}
	if got, err := served(fresh(roots), "https://"+https+"/"); err != nil || got != serial {
		t.Fatalf("after reloads the node serves %s (%v), not %s", got, err, serial)
	}
	// There is no default certificate for names the section does not list.
	for _, name := range []string{"", "other.perigee.test"} {
		if c, err := tls.Dial("tcp", https, &tls.Config{ServerName: name, InsecureSkipVerify: true}); err == nil {
			c.Close()
			t.Fatalf("SNI %q: a certificate was served", name)
		}
	}
}

// A certificate pebble issues for 30 seconds is renewed before it expires
// (a third of its lifetime left), and the new one is served at once. Then
// the CA is gone: the next renewal fails, the renewed certificate keeps
// serving, and that shows where an operator alerts: the failure and the
// certificate's expiry are series of GET /metrics, not only figures of GET
// /certificates.
func TestACMERenewsAShortLivedCertificateAndAFailedRenewalKeepsItServing(t *testing.T) {
	t.Parallel() // most of it waits on certmagic's clocks: beside the other such test
	https := acmetest.FreeAddr(t)
	pb := acmetest.Start(t, acmetest.Options{HTTPAddr: acmetest.FreeAddr(t), TLSAddr: https, Validity: 30 * time.Second})
	n := startNode(t, acmeYAML(t, pb, https, t.TempDir(), "  challenges: [tls-alpn-01]\n"))
	c := fresh(pb.Roots(t))
	url := "https://" + https + "/"
	first := waitServed(t, c, url, "")
	renewed := waitServed(t, c, url, first)
	st := n.acme.manager.Stats()
	if st.Obtained < 2 || st.Hosts[0].Serial != renewed {
		t.Fatalf("after renewal: %+v", st)
	}

	pb.Stop()
	for deadline := time.Now().Add(60 * time.Second); n.acme.manager.Stats().Failed == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no renewal failed with the CA gone: %+v", n.acme.manager.Stats())
		}
	}
	if got, err := served(c, url); err != nil || got != renewed {
		t.Fatalf("after a failed renewal the node serves %s (%v), not the renewed %s", got, err, renewed)
	}
	_, body := get(t, http.DefaultClient, "http://"+n.Addrs().Admin+"/metrics")
	st = n.acme.manager.Stats()
	for _, want := range []string{
		fmt.Sprintf(`perigee_acme_certificates_total{outcome="obtained"} %d`, st.Obtained),
		`perigee_acme_certificates_total{outcome="failed"} `,
		fmt.Sprintf(`perigee_acme_certificate_expiry_timestamp_seconds{host=%q} %s`, acmeHost, strconv.FormatFloat(float64(st.Hosts[0].NotAfter.Unix()), 'g', -1, 64)),
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics has no %q", want)
		}
	}
}

// With an OCSP responder named in the certificate, every protocol's
// handshake carries a staple that says "good" for the served certificate.
func TestACMEStaplesOCSPOnEveryProtocol(t *testing.T) {
	https := acmetest.FreeAddr(t)
	pb := acmetest.Start(t, acmetest.Options{HTTPAddr: acmetest.FreeAddr(t), TLSAddr: https, OCSP: true})
	n := startNode(t, acmeYAML(t, pb, https, t.TempDir(), "  challenges: [tls-alpn-01]\n"))
	roots := pb.Roots(t)
	url := "https://" + https + "/"
	waitServed(t, fresh(roots), url, "")
	if st := n.acme.manager.Stats(); !st.Hosts[0].Stapled {
		t.Fatalf("no staple held: %+v", st)
	}
	for _, pc := range pebbleClients(t, roots) {
		resp, _ := get(t, pc.client, url)
		chain := resp.TLS.VerifiedChains[0]
		staple, err := ocsp.ParseResponseForCert(resp.TLS.OCSPResponse, chain[0], chain[1])
		if err != nil || staple.Status != ocsp.Good {
			t.Fatalf("%s: staple %v, %v", pc.name, staple, err)
		}
	}
}

// The OCSP responder is the CA's, named in the certificate it issues, and
// certmagic asked it with a client that has no timeout: a responder that
// never answers held the certificate out of the cache, so it was never
// served, and held the maintenance loop, so nothing was renewed again.
// Stapling gives up instead (after certmagic's 30 seconds), and the
// certificate is served without a staple. A shutdown while the
// maintenance loop waits on the responder again (each renew_check) ends
// within its deadline: it waited for that request, though the node had
// stopped serving.
func TestACMEStalledOCSPResponderHoldsNoCertificateBack(t *testing.T) {
	t.Parallel() // most of it waits on certmagic's clocks: beside the other such test
	https := acmetest.FreeAddr(t)
	pb := acmetest.Start(t, acmetest.Options{HTTPAddr: acmetest.FreeAddr(t), TLSAddr: https, OCSP: true, OCSPStall: true})
	n := startNode(t, acmeYAML(t, pb, https, t.TempDir(), "  challenges: [tls-alpn-01]\n"))
	waitServed(t, fresh(pb.Roots(t)), "https://"+https+"/", "")
	if st := n.acme.manager.Stats(); st.Hosts[0].Stapled {
		t.Fatalf("a staple from a responder that never answers: %+v", st)
	}
	time.Sleep(3 * time.Second) // past renew_check: the loop asks the responder again
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := filestest.Within(t, "Shutdown with a one-second deadline", func() error { return n.Shutdown(ctx) }); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
}

// Host names are case-insensitive, and certmagic manages the lower-case
// spelling; a host listed as WWW.Perigee.Test got its certificate, but
// GET /certificates and the expiry series, which looked it up as spelt,
// said it had none.
func TestACMEHostListedInCapitalsIsReportedWithItsCertificate(t *testing.T) {
	https := acmetest.FreeAddr(t)
	pb := acmetest.Start(t, acmetest.Options{HTTPAddr: acmetest.FreeAddr(t), TLSAddr: https})
	yaml := strings.Replace(acmeYAML(t, pb, https, t.TempDir(), "  challenges: [tls-alpn-01]\n"), "hosts: ["+acmeHost+"]", "hosts: [WWW.Perigee.Test]", 1)
	n := startNode(t, yaml)
	serial := waitServed(t, fresh(pb.Roots(t)), "https://"+https+"/", "")
	if st := n.acme.manager.Stats(); st.Hosts[0].Host != "WWW.Perigee.Test" || st.Hosts[0].Serial != serial {
		t.Fatalf("serving %s, GET /certificates says %+v", serial, st.Hosts)
	}
	_, body := get(t, http.DefaultClient, "http://"+n.Addrs().Admin+"/metrics")
	if !strings.Contains(body, `perigee_acme_certificate_expiry_timestamp_seconds{host="WWW.Perigee.Test"}`) {
		t.Fatal("GET /metrics has no expiry for the host")
	}
}
