// Package acmetest runs Let's Encrypt's test CA, pebble (Debian package
// pebble), for tests: on loopback, with a DNS server that resolves every
// name to 127.0.0.1 so pebble's validation reaches the node under test.
package acmetest

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/crypto/ocsp"

	"perigee/certs"
	"perigee/logtest"
)

// Options shape the CA.
type Options struct {
	// HTTPAddr and TLSAddr are where pebble validates HTTP-01 and
	// TLS-ALPN-01 (loopback host:port; the node must listen there).
	HTTPAddr, TLSAddr string
	// Validity of the certificates pebble issues; zero is its default.
	Validity time.Duration
	// OCSP names a responder in what pebble issues and runs it, answering
	// "good" signed by pebble's intermediate.
	OCSP bool
	// OCSPStall makes that responder take each request and never answer.
	OCSPStall bool
}

// Pebble is a running CA.
type Pebble struct {
	// Directory is the ACME directory URL.
	Directory string
	// ServerCA is a PEM file of the certificate pebble serves its API
	// with, for a client's ca_roots.
	ServerCA string
	mgmt     string
	client   *http.Client
	stop     func()
}

// Stop ends the CA now, for a test of what a node does while its CA is
// gone; otherwise it ends with the test.
func (p *Pebble) Stop() { p.stop() }

// Start runs pebble until the test ends; it skips the test when pebble is
// not installed.
func Start(t testing.TB, o Options) *Pebble {
	t.Helper()
	bin, err := exec.LookPath("pebble")
	if err != nil {
		t.Skip("pebble not installed (Debian package pebble; .ci/run installs it)")
	}
	dir := t.TempDir()
	cert, err := certs.SelfSigned([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	p := &Pebble{ServerCA: filepath.Join(dir, "pebble.pem")}
	keyFile := filepath.Join(dir, "pebble.key")
	if err := certs.WritePEM(cert, p.ServerCA, keyFile); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	p.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(p.client.CloseIdleConnections)

	free := freeAddrs(t, 2)
	api, mgmt := free[0], free[1]
	p.Directory, p.mgmt = "https://"+api+"/dir", "https://"+mgmt
	conf := map[string]any{
		"listenAddress":                  api,
		"managementListenAddress":        mgmt,
		"certificate":                    p.ServerCA,
		"privateKey":                     keyFile,
		"httpPort":                       port(t, o.HTTPAddr),
		"tlsPort":                        port(t, o.TLSAddr),
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}
	if o.OCSP {
		conf["ocspResponderURL"] = p.ocspResponder(t, o.OCSPStall)
	}
	if o.Validity > 0 {
		conf["certificateValidityPeriod"] = int(o.Validity / time.Second)
	}
	b, _ := json.Marshal(map[string]any{"pebble": conf})
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, b, 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "-config", confFile, "-dnsserver", loopbackDNS(t))
	// No random validation sleeps and no nonce rejections: a test then
	// waits only for the work itself.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	var out logtest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.stop = sync.OnceFunc(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("pebble output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := p.client.Get(p.Directory)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not start: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Roots is the root that signs what pebble issues (it is made anew each
// run), from its management endpoint.
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	b, err := p.get("/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble /roots/0 is not PEM: %q", b)
	}
	return pool
}

// get reads a management endpoint.
func (p *Pebble) get(path string) ([]byte, error) {
	resp, err := p.client.Get(p.mgmt + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("pebble %s: %s", path, resp.Status)
	}
	return b, err
}

// ocspResponder serves OCSP on loopback until the test ends and returns
// its URL. It signs with pebble's intermediate, fetched at the first
// request (pebble makes its keys when it starts); or, stalling, it holds
// each request unanswered until the test ends.
func (p *Pebble) ocspResponder(t testing.TB, stall bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if stall {
			<-r.Context().Done()
			return
		}
		der, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := p.ocspGood(der)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(resp)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}

func (p *Pebble) ocspGood(reqDER []byte) ([]byte, error) {
	req, err := ocsp.ParseRequest(reqDER)
	if err != nil {
		return nil, err
	}
	certPEM, err := p.get("/intermediates/0")
	if err != nil {
		return nil, err
	}
	keyPEM, err := p.get("/intermediate-keys/0")
	if err != nil {
		return nil, err
	}
	ca, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pebble's intermediate: %w", err)
	}
	issuer, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return ocsp.CreateResponse(issuer, issuer, ocsp.Response{
		Status: ocsp.Good, SerialNumber: req.SerialNumber,
		ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour),
	}, ca.PrivateKey.(crypto.Signer))
}

// loopbackDNS serves A 127.0.0.1 for every name, and no other records,
// until the test ends; it returns its UDP address.
func loopbackDNS(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// freeAddrs are n distinct loopback TCP addresses nothing listens on now.
// They are held open together while picked: one closed before the next is
// picked may be picked again (both of pebble's listeners once got the same
// port, and it failed to start).
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

// FreeAddr is a loopback address free on both TCP and UDP now, for a
// node's HTTPS (and HTTP/3) listener or its HTTP-01 listener.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 20 {
		addr := freeAddrs(t, 1)[0]
		if pc, err := net.ListenPacket("udp", addr); err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no port free on both TCP and UDP")
	return ""
}

func port(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("pebble: %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("pebble: %q: %v", addr, err)
	}
	return n
}
