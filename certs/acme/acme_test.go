package acme

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"perigee/files/filestest"
)

func testManager(t *testing.T) *Manager {
	c := Config{Hosts: []string{"www.example.com"}, Storage: t.TempDir()}
	c.SetDefaults()
	m, err := New(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Before Start (the node's listeners open first) a handshake is refused,
// not a crash, and the HTTP listener already redirects.
func TestManagerBeforeStart(t *testing.T) {
	m := testManager(t)
	if c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "www.example.com"}); c != nil || err == nil {
		t.Fatalf("certificate before Start: %v, %v", c, err)
	}
	if st := m.Stats(); len(st.Hosts) != 1 || st.Hosts[0].Serial != "" {
		t.Fatalf("stats before Start: %+v", st)
	}
	m.Stop(context.Background()) // nothing to stop
	for host, want := range map[string]string{
		"www.example.com":      "https://www.example.com/x?y",
		"www.example.com:80":   "https://www.example.com/x?y",
		"WWW.EXAMPLE.COM":      "https://WWW.EXAMPLE.COM/x?y",
		"evil.example.net":     "",
		"www.example.com.evil": "",
	} {
		req := httptest.NewRequest("GET", "http://x/x?y", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		m.HTTPHandler("443").ServeHTTP(rec, req)
		if want == "" && rec.Code != http.StatusNotFound || want != "" && (rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != want) {
			t.Errorf("Host %q: %d to %q, want %q", host, rec.Code, rec.Header().Get("Location"), want)
		}
	}
}

// The redirect's target is the managed host and the request's path: a
// request target that is no path (an opaque "x:@evil.example" or "*",
// which Go's server accepts on the wire though no browser sends one) must
// not be spliced after the host, where it became the userinfo, a longer
// host name or another port. 308 is cacheable, so a shared cache in
// front could keep such an answer for others.
func TestRedirectTargetIsAlwaysThisHost(t *testing.T) {
	srv := httptest.NewServer(testManager(t).HTTPHandler("443"))
	defer srv.Close()
	for _, target := range []string{"x:@evil.example/", "x:.evil.example/", "x::8443/", "*", "http:evil.example"} {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: www.example.com\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusBadRequest || loc != "" {
			t.Errorf("target %q: %d to %q, want 400 and no redirect", target, resp.StatusCode, loc)
		}
	}
}

func TestNewRefusesBadRoots(t *testing.T) {
	c := Config{Hosts: []string{"www.example.com"}, Storage: t.TempDir(), CARoots: "acme.go"}
	c.SetDefaults()
	if _, err := New(c, slog.Default()); err == nil {
		t.Fatal("accepted a ca_roots file with no certificate")
	}
}

// ca_roots names what the operator wrote: a FIFO or a device is refused at
// once, not waited on or read without end.
func TestNewRefusesRootsThatAreNoFiles(t *testing.T) {
	for _, path := range []string{filestest.FIFO(t, filepath.Join(t.TempDir(), "fifo")), "/dev/zero"} {
		c := Config{Hosts: []string{"www.example.com"}, Storage: t.TempDir(), CARoots: path}
		c.SetDefaults()
		filestest.Refused(t, "New with ca_roots "+path, func() error { _, err := New(c, slog.Default()); return err }, "not a regular file")
	}
}

// The redirect's host is the managed host alone, whatever the Host header
// on the wire holds around it: userinfo, a second host, a port of words,
// brackets, a trailing dot, an IPv6 literal, or a header split by CRLF
// (which Go's server refuses itself).
func TestRedirectHostIsTheManagedHostWhateverHostSays(t *testing.T) {
	srv := httptest.NewServer(testManager(t).HTTPHandler("8443"))
	defer srv.Close()
	for _, host := range []string{
		"www.example.com:80@evil.example", "evil.example@www.example.com", "www.example.com:@evil.example:1",
		"[www.example.com]:80", "www.example.com.", "www.example.com.:80", "[::1]:80", "[::ffff:127.0.0.1]",
		"www.example.com:80:80", "www.example.com\r\nLocation: https://evil.example/", "www.example.com%40evil.example",
		"www.example.com\\@evil.example", "www.example.com:/evil.example",
	} {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); loc != "" && loc != "https://www.example.com:8443/x" {
			t.Errorf("Host %q: %d to %q", host, resp.StatusCode, loc)
		}
	}
}
