package acme

import (
	"crypto/tls"
	"io"
	"log/slog"
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
	m.Stop() // nothing to stop
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
