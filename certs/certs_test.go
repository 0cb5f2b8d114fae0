package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	dir := t.TempDir()
	certPath, keyPath := devPEM(t, dir, nil)
	fifo := filestest.FIFO(t, filepath.Join(dir, "fifo"))
	huge := filestest.Sparse(t, filepath.Join(dir, "huge.pem"), 64<<20)
	for _, bad := range []struct{ path, want string }{{fifo, "not a regular file"}, {"/dev/zero", "not a regular file"}, {huge, "over"}} {
		filestest.Refused(t, "Load with cert "+bad.path, func() error { _, err := Load(bad.path, keyPath, nil); return err }, bad.path, bad.want)
		filestest.Refused(t, "Load with key "+bad.path, func() error { _, err := Load(certPath, bad.path, nil); return err }, bad.path, bad.want)
	}
}

// devPEM writes a fresh dev certificate and its key in dir, with
// chainTail appended to the certificate file as it is.
func devPEM(t *testing.T, dir string, chainTail []byte) (certPath, keyPath string) {
	t.Helper()
	c, err := SelfSigned(nil)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "chain.pem"), filepath.Join(dir, "key.pem")
	if err := WritePEM(c, certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	leaf, _ := os.ReadFile(certPath)
	if err := os.WriteFile(certPath, append(leaf, chainTail...), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// tls.X509KeyPair parses only the leaf and never looks at its dates: an
// expired or not yet valid certificate (testdata/, made for 2000 and for
// 2090), a chain block that is no certificate, or a file of a thousand
// blocks (each sent in every handshake) was served, and a reload swapped
// it in for a good one. Each is refused, naming the file, the block's
// line and why.
func TestLoadRefusesAChainNoClientWouldAccept(t *testing.T) {
	dev, _ := SelfSigned(nil)
	intermediate := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: dev.Certificate[0]})
	garbage := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	filestest.Refused(t, "expired", func() error { _, err := Load("testdata/expired.pem", "testdata/expired.key", nil); return err },
		"testdata/expired.pem:1: the certificate expired at 2001-01-01T00:00:00Z")
	filestest.Refused(t, "not yet valid", func() error {
		_, err := Load("testdata/not-yet-valid.pem", "testdata/not-yet-valid.key", nil)
		return err
	}, "testdata/not-yet-valid.pem:1: the certificate is not valid before 2090-01-01T00:00:00Z")
	certPath, keyPath := devPEM(t, t.TempDir(), append(intermediate, garbage...))
	chain, _ := os.ReadFile(certPath)
	line := 1 + bytes.Count(chain[:len(chain)-len(garbage)], []byte("\n"))
	filestest.Refused(t, "garbage intermediate", func() error { _, err := Load(certPath, keyPath, nil); return err },
		fmt.Sprintf("chain.pem:%d: certificate 3 of the chain", line))
	certPath, keyPath = devPEM(t, t.TempDir(), bytes.Repeat(intermediate, 1000))
	filestest.Refused(t, "a thousand blocks", func() error { _, err := Load(certPath, keyPath, nil); return err },
		"chain.pem holds 1001 certificates; a chain is at most 10")

	certPath, keyPath = devPEM(t, t.TempDir(), nil)
	otherKey := filepath.Join(t.TempDir(), "other.key")
	if err := WritePEM(dev, filepath.Join(t.TempDir(), "other.pem"), otherKey); err != nil {
		t.Fatal(err)
	}
	filestest.Refused(t, "key of another certificate", func() error { _, err := Load(certPath, otherKey, nil); return err }, "chain.pem", "other.key", "does not match")

	// A leaf and its intermediates load, each parsed.
	certPath, keyPath = devPEM(t, t.TempDir(), append(intermediate, intermediate...))
	if c, err := Load(certPath, keyPath, nil); err != nil || len(c.Certificate) != 3 || c.Leaf == nil || c.Leaf.Subject.CommonName != "perigee dev" {
		t.Fatalf("leaf with two intermediates: %v", err)
	}
}

// tls.X509KeyPair takes any key it can parse, and a key no handshake can
// sign with loaded, and on reload replaced a good certificate, failing
// every handshake after: a 512-bit RSA key (testdata/, made with openssl,
// since Go makes none) fails all, and a P-224 key every TLS 1.3 one, and
// so all of HTTP/3. Each is refused, naming the file and why.
func TestLoadRefusesAKeyNoHandshakeCanUse(t *testing.T) {
	filestest.Refused(t, "512-bit RSA", func() error { _, err := Load("testdata/rsa512.pem", "testdata/rsa512.key", nil); return err },
		"testdata/rsa512.pem", "no TLS 1.3 handshake", "RSA key size too small")
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "p224.pem"), filepath.Join(dir, "p224.key")
	key, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := WritePEM(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	filestest.Refused(t, "P-224", func() error { _, err := Load(certPath, keyPath, nil); return err },
		"p224.pem", "no TLS 1.3 handshake", "P-224")
}

// A leaf whose extended key usage leaves out serverAuth (a client
// certificate written where the server's goes) fails every client that
// verifies it, as an expired one does; it is refused the same way.
func TestLoadRefusesALeafNotForServers(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		usage []x509.ExtKeyUsage
		ok    bool
	}{{[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false}, {[]x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning, x509.ExtKeyUsageEmailProtection}, false},
		{nil, true}, {[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, true}, {[]x509.ExtKeyUsage{x509.ExtKeyUsageAny}, true}} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}, ExtKeyUsage: tc.usage}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		certPath, keyPath := filepath.Join(dir, "eku.pem"), filepath.Join(dir, "eku.key")
		if err := WritePEM(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, certPath, keyPath); err != nil {
			t.Fatal(err)
		}
		load := func() error { _, err := Load(certPath, keyPath, nil); return err }
		if tc.ok {
			if err := load(); err != nil {
				t.Errorf("usage %v: %v", tc.usage, err)
			}
			continue
		}
		filestest.Refused(t, fmt.Sprint("usage ", tc.usage), load, "eku.pem:1", "not for TLS servers")
	}
}
