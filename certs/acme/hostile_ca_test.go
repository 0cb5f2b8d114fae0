package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"perigee/certs"
	"perigee/files/filestest"
	"perigee/logtest"
	"perigee/units"
)

// hostileCA is an ACME server that takes an order, hands out a TLS-ALPN-01
// challenge, and then answers every poll of the authorization "pending,
// come back in 31 years". It checks no signature: the client under test
// is not what it tests. It keeps the names ordered and counts the
// authorization's polls.
type hostileCA struct {
	srv     *httptest.Server
	roots   string // PEM file of its HTTPS certificate, for ca_roots
	polls   atomic.Int64
	mu      sync.Mutex
	ordered []string
}

// orderedNames are the identifiers of every order so far.
func (ca *hostileCA) orderedNames() []string {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return slices.Clone(ca.ordered)
}

func startHostileCA(t *testing.T, host string) *hostileCA {
	ca := &hostileCA{}
	mux := http.NewServeMux()
	url := func(path string) string { return ca.srv.URL + path }
	reply := func(w http.ResponseWriter, status int, body any) {
		w.Header().Set("Replay-Nonce", fmt.Sprintf("nonce-%d", time.Now().UnixNano()))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(body)
	}
	authz := func(status string) map[string]any {
		return map[string]any{
			"status":     status,
			"identifier": map[string]string{"type": "dns", "value": host},
			"challenges": []map[string]string{{"type": "tls-alpn-01", "url": url("/chall"), "token": "Xy0aXJzdC10b2tlbi1vZi1hLWNoYWxsZW5nZQ", "status": status}},
		}
	}
	mux.HandleFunc("GET /dir", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, map[string]string{"newNonce": url("/nonce"), "newAccount": url("/account"), "newOrder": url("/order"), "revokeCert": url("/revoke"), "keyChange": url("/key")})
	})
	mux.HandleFunc("/nonce", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Replay-Nonce", fmt.Sprintf("nonce-%d", time.Now().UnixNano()))
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("POST /account", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", url("/account/1"))
		reply(w, http.StatusCreated, map[string]any{"status": "valid"})
	})
	mux.HandleFunc("POST /order", func(w http.ResponseWriter, r *http.Request) {
		var jws struct{ Payload string }
		var order struct{ Identifiers []struct{ Value string } }
		json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&jws)
		payload, _ := base64.RawURLEncoding.DecodeString(jws.Payload)
		json.Unmarshal(payload, &order)
		ca.mu.Lock()
		for _, id := range order.Identifiers {
			ca.ordered = append(ca.ordered, id.Value)
		}
		ca.mu.Unlock()
		w.Header().Set("Location", url("/order/1"))
		reply(w, http.StatusCreated, map[string]any{
			"status": "pending", "identifiers": []map[string]string{{"type": "dns", "value": host}},
			"authorizations": []string{url("/authz")}, "finalize": url("/finalize"),
		})
	})
	mux.HandleFunc("POST /authz", func(w http.ResponseWriter, r *http.Request) {
		if ca.polls.Add(1) > 1 {
			w.Header().Set("Retry-After", "1000000000")
		}
		reply(w, 200, authz("pending"))
	})
	mux.HandleFunc("POST /chall", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, map[string]string{"type": "tls-alpn-01", "url": url("/chall"), "token": "Xy0aXJzdC10b2tlbi1vZi1hLWNoYWxsZW5nZQ", "status": "processing"})
	})
	ca.srv = httptest.NewTLSServer(mux)
	t.Cleanup(ca.srv.Close)
	ca.roots = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca.roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// A CA that answers each poll with a Retry-After of 31 years held the
// issuance — and the storage lock on the name, which every node sharing
// the storage waits on — for good, with nothing logged and nothing
// counted as failed. Each attempt is bounded by issue_timeout: the attempt
// fails, is logged with the host and why, counted in Stats.Failed, and
// Stop returns.
func TestIssuanceAgainstACAThatNeverFinishesIsBounded(t *testing.T) {
	const host = "stuck.perigee.test"
	ca := startHostileCA(t, host)
	// The HTTPS listener TLS-ALPN-01 would be answered on; the CA never
	// validates, so nothing is served on it.
	https, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer https.Close()
	var logs logtest.Buffer
	c := Config{Hosts: []string{host}, CA: ca.srv.URL + "/dir", CARoots: ca.roots, Storage: t.TempDir(), Challenges: []string{TLSALPN01}, IssueTimeout: units.Duration(2 * time.Second)}
	c.SetDefaults()
	m, err := New(c, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(https.Addr().String(), ""); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); m.Stats().Failed == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			m.Stop(context.Background())
			t.Fatalf("after %d polls of the authorization the issuance neither ended nor failed:\n%s", ca.polls.Load(), logs.String())
		}
	}
	if ca.polls.Load() < 2 {
		t.Fatalf("the issuance failed before the CA's Retry-After (%d polls):\n%s", ca.polls.Load(), logs.String())
	}
	if log := logs.String(); !strings.Contains(log, "certificate not obtained") || !strings.Contains(log, host) || !strings.Contains(log, "issue_timeout") {
		t.Fatalf("the failure is not logged with the host and the bound:\n%s", log)
	}
	if st := m.Stats(); st.Hosts[0].Serial != "" {
		t.Fatalf("a certificate from a CA that issued none: %+v", st)
	}
	m.Stop(context.Background())
}

// The storage directory is shared by a fleet, and certmagic read what it
// holds with os.ReadFile: a huge file where a certificate belongs was read
// whole by every node that loads it, and a FIFO there hung the loading of
// its host for good, with nothing logged. Each is refused by its kind or
// size, before any read, and the refusal names the file.
func TestStoredFilesAreReadWithinBounds(t *testing.T) {
	const hugeHost, fifoHost = "huge.perigee.test", "fifo.perigee.test"
	// No CA is asked: the hosts' files are in storage.
	c := Config{Hosts: []string{hugeHost, fifoHost}, CA: "https://127.0.0.1:1/dir", Storage: t.TempDir()}
	c.SetDefaults()
	issuerKey := (&certmagic.ACMEIssuer{CA: c.CA}).IssuerKey()
	// certmagic loads a host's certificate only when its key and
	// metadata are stored beside it.
	stored := func(host string) string {
		at := func(key string) string { return filepath.Join(c.Storage, filepath.FromSlash(key)) }
		if err := os.MkdirAll(filepath.Dir(at(certmagic.StorageKeys.SiteCert(issuerKey, host))), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{certmagic.StorageKeys.SitePrivateKey(issuerKey, host), certmagic.StorageKeys.SiteMeta(issuerKey, host)} {
			if err := os.WriteFile(at(key), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return at(certmagic.StorageKeys.SiteCert(issuerKey, host))
	}
	huge := filestest.Sparse(t, stored(hugeHost), 256<<20)
	fifo := filestest.FIFO(t, stored(fifoHost))
	var logs logtest.Buffer
	m, err := New(c, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := m.Start("", ""); err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background())
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), huge) || !strings.Contains(logs.String(), fifo); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the huge file and the FIFO in storage are not both refused by name:\n%s", logs.String())
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Fatalf("loading storage allocated %d MiB for a 256 MiB file", grew>>20)
	}
	for _, want := range []string{huge + ": over", fifo + ": not a regular file"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not say %q:\n%s", want, logs.String())
		}
	}
}

// Only the configured hosts are ever ordered: certmagic orders a name a
// handshake asks for when on-demand issuance is on, so any client could
// have the node order certificates for names of its choosing. Handshakes
// for other names, in other spellings, with no SNI, with ALPN acme-tls/1
// when no challenge is pending for the name, and hundreds of distinct
// names in a burst all fail, and the CA sees one order only, for the
// configured host; the storage holds nothing for the other names. (An
// on-demand order is made inside the handshake, so once the handshakes
// have failed, any would have reached the CA.) Looking up a challenge for
// a name too long to be a file name, on either listener, logs nothing: any
// client could flood the log so.
func TestClientsNamingOtherHostsOrderAndLogNothing(t *testing.T) {
	const host = "www.perigee.test"
	ca := startHostileCA(t, host)
	c := Config{Hosts: []string{host}, CA: ca.srv.URL + "/dir", CARoots: ca.roots, Storage: t.TempDir(), Challenges: []string{TLSALPN01, HTTP01}}
	c.SetDefaults()
	var logs logtest.Buffer
	m, err := New(c, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var store certs.Store
	store.Use(m)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", store.TLSConfig("h2", "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			go func() { conn.(*tls.Conn).Handshake(); conn.Close() }()
		}
	}()
	plain := httptest.NewServer(m.HTTPHandler("443"))
	defer plain.Close()
	if err := m.Start(ln.Addr().String(), plain.Listener.Addr().String()); err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background())
	names := []string{"", "other.perigee.test", "OTHER.perigee.test", "other.perigee.test.", "пример.perigee.test", "xn--e1afmkfd.perigee.test",
		strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", 61), "localhost", "perigee.test", "a.www.perigee.test"}
	for i := range 300 {
		names = append(names, fmt.Sprintf("burst-%d.perigee.test", i))
	}
	// Once the CA polls, the configured host's challenge is pending, and
	// stored: the directory the lookups below look in exists.
	for deadline := time.Now().Add(30 * time.Second); ca.polls.Load() < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the configured host's challenge never became pending")
		}
	}
	req, _ := http.NewRequest("GET", plain.URL+"/.well-known/acme-challenge/Xy0aXJzdC10b2tlbi1vZi1hLWNoYWxsZW5nZQ", nil)
	req.Host = strings.Repeat("a", 300) + ".perigee.test"
	resp, err := plain.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("HTTP-01 lookup for a 300-byte host: %s, want 404", resp.Status)
	}
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}}
	for _, name := range names {
		for _, alpn := range [][]string{{"h2"}, {"acme-tls/1"}} {
			dialer.Config = &tls.Config{ServerName: name, NextProtos: alpn, InsecureSkipVerify: true}
			conn, err := dialer.Dial("tcp", ln.Addr().String())
			if err == nil {
				conn.Close()
				t.Fatalf("SNI %q, ALPN %v: a certificate was served", name, alpn)
			}
			if got := ca.orderedNames(); slices.ContainsFunc(got, func(n string) bool { return n != host }) {
				t.Fatalf("a handshake for %q, ALPN %v, had the CA asked for %q", name, alpn, got)
			}
		}
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("clients naming other hosts got into the log:\n%s", logs.String())
	}
	if got := ca.orderedNames(); !slices.Equal(got, []string{host}) {
		t.Fatalf("the CA was asked for %d names (%.5q...), want %s alone", len(got), got, host)
	}
	filepath.WalkDir(c.Storage, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(path, "perigee.test") && !strings.Contains(path, host) {
			t.Errorf("storage holds %s", path)
		}
		return nil
	})
}

// acmez puts the whole body of a CA's error answer into its error, and
// certmagic hands that error to the event the failure is logged from: a
// CA answering with megabytes had them written into the node's log, one
// line at every attempt. The line holds the host, the status and the
// start of the body, within a bound.
func TestACAErrorBodyIsBoundedInTheLog(t *testing.T) {
	const host = "loud.perigee.test"
	body := "denied " + strings.Repeat("x", 8<<20)
	ca := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, body)
	}))
	defer ca.Close()
	logs := startAgainst(t, ca, host)
	var line string
	for deadline := time.Now().Add(60 * time.Second); line == ""; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the CA's refusal was never logged:\n%.2000s", logs.String())
		}
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, "certificate not obtained") {
				line = l
			}
		}
	}
	t.Logf("%d bytes logged, the failure's line %d bytes: %.300s", len(logs.String()), len(line), line)
	if !strings.Contains(line, host) || !strings.Contains(line, "HTTP 403: denied xxx") {
		t.Fatalf("the failure is not logged with the host and the CA's answer:\n%.2000s", line)
	}
	if n := len(logs.String()); n > 64<<10 {
		t.Fatalf("the log took %d KiB of the CA's error body", n>>10)
	}
}

// The clients that talk to the CA followed its redirects, anywhere: to
// plain HTTP, or to what only this host may reach, such as the cloud's
// metadata service (here a loopback server), whose answer went into the
// error, and so the log. ACME (RFC 8555) has no redirects; a redirected
// request is refused, and the failure says so.
func TestTheCAsRedirectsAreNotFollowed(t *testing.T) {
	const host = "moved.perigee.test"
	var reached atomic.Int64
	inside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		http.Error(w, "instance credentials", http.StatusNotFound)
	}))
	defer inside.Close()
	ca := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inside.URL+"/latest/meta-data/", http.StatusFound)
	}))
	defer ca.Close()
	logs := startAgainst(t, ca, host)
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(logs.String(), "certificate not obtained"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the redirect never failed an attempt:\n%.2000s", logs.String())
		}
	}
	t.Logf("%.1000s", logs.String())
	if n := reached.Load(); n > 0 {
		t.Errorf("the redirect's target was asked %d times", n)
	}
	if log := logs.String(); strings.Contains(log, "instance credentials") || !strings.Contains(log, "redirect") {
		t.Errorf("the failure does not say the CA redirected, or holds the target's answer:\n%.2000s", log)
	}
}

// The OCSP responder is named by the certificate, and its client followed
// redirects too: a stored certificate whose responder redirects to a
// server only this host may reach had the node ask that server at every
// refresh. The redirect is refused; the certificate is served unstapled.
func TestTheOCSPRespondersRedirectsAreNotFollowed(t *testing.T) {
	const host = "stapled.perigee.test"
	var reached, redirected atomic.Int64
	inside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer inside.Close()
	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected.Add(1)
		http.Redirect(w, r, inside.URL+"/latest/meta-data/", http.StatusTemporaryRedirect)
	}))
	defer responder.Close()
	// A CA of the test's own signs the stored certificate, naming the
	// responder; no ACME CA is asked, the certificate being in storage.
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: []string{host}, OCSPServer: []string{responder.URL},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour)}, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	c := Config{Hosts: []string{host}, CA: "https://127.0.0.1:1/dir", Storage: t.TempDir(), RenewCheck: units.Duration(time.Second)}
	c.SetDefaults()
	issuerKey := (&certmagic.ACMEIssuer{CA: c.CA}).IssuerKey()
	for key, data := range map[string][]byte{
		certmagic.StorageKeys.SiteCert(issuerKey, host): append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...),
		certmagic.StorageKeys.SitePrivateKey(issuerKey, host): pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		certmagic.StorageKeys.SiteMeta(issuerKey, host):       []byte("{}"),
	} {
		path := filepath.Join(c.Storage, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m, err := New(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start("", ""); err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background())
	// Each refresh asks the responder once, after the one before it ended,
	// and with it any redirect it would have followed.
	for deadline := time.Now().Add(60 * time.Second); redirected.Load() < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the responder was asked %d times; want a staple refreshed twice", redirected.Load())
		}
	}
	if n := reached.Load(); n > 0 {
		t.Errorf("the responder's redirect was followed %d times", n)
	}
	if st := m.Stats(); st.Hosts[0].Serial != "2" || st.Hosts[0].Stapled {
		t.Errorf("stats %+v; want the stored certificate, unstapled", st)
	}
}

// startAgainst starts a manager for host whose CA is ca, trusted for its
// certificate alone, and returns its log; the manager stops with the test.
func startAgainst(t *testing.T, ca *httptest.Server, host string) *logtest.Buffer {
	t.Helper()
	roots := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	c := Config{Hosts: []string{host}, CA: ca.URL + "/dir", CARoots: roots, Storage: t.TempDir(), Challenges: []string{HTTP01}}
	c.SetDefaults()
	m, err := New(c, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	plain := httptest.NewServer(m.HTTPHandler("443"))
	t.Cleanup(plain.Close)
	if err := m.Start("", plain.Listener.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(context.Background()) })
	return logs
}
