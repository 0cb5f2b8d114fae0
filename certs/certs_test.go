package certs

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"perigee/files/filestest"
)

func TestSelfSignedCoversLoopbackAndHosts(t *testing.T) {
	c, err := SelfSigned([]string{"fra-1.example.net", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "fra-1.example.net", "10.1.2.3"} {
		if err := c.Leaf.VerifyHostname(h); err != nil {
			t.Errorf("dev cert does not cover %s: %v", h, err)
		}
	}
	if h := SPKIHash(c); len(h) != 44 {
		t.Fatalf("SPKI hash %q is not base64 SHA-256", h)
	}
}

func TestLoadFromFilesAndBadFiles(t *testing.T) {
	c, _ := SelfSigned(nil)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	key, _ := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
	got, err := Load(certPath, keyPath, nil)
	if err != nil || got.Leaf == nil || SPKIHash(got) != SPKIHash(c) {
		t.Fatalf("load: %v", err)
	}
	_, err = Load(filepath.Join(dir, "missing.pem"), keyPath, nil)
	if err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("missing cert error should name the file: %v", err)
	}
	os.WriteFile(certPath, []byte("not a cert"), 0o600)
	if _, err := Load(certPath, keyPath, nil); err == nil {
		t.Fatal("garbage certificate accepted")
	}
}

// tls.cert and tls.key name files the operator wrote: a FIFO there blocked
// the start (and the aggregator's, whose config does not check them first)
// for good, and a file of gigabytes was read whole into memory.
func TestLoadRefusesWhatIsNoCertificateFile(t *testing.T) {
	c, _ := SelfSigned(nil)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	key, _ := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
	fifo := filestest.FIFO(t, filepath.Join(dir, "fifo"))
	huge := filestest.Sparse(t, filepath.Join(dir, "huge.pem"), 64<<20)
	for _, bad := range []struct{ path, want string }{{fifo, "not a regular file"}, {"/dev/zero", "not a regular file"}, {huge, "over"}} {
		filestest.Refused(t, "Load with cert "+bad.path, func() error { _, err := Load(bad.path, keyPath, nil); return err }, bad.path, bad.want)
		filestest.Refused(t, "Load with key "+bad.path, func() error { _, err := Load(certPath, bad.path, nil); return err }, bad.path, bad.want)
	}
}
