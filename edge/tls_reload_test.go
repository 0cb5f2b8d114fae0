package edge

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"perigee/certs"
)

// A reload re-reads tls.cert and tls.key, for rotation. A rotated file no
// client would accept (here an expired certificate) was swapped in, and
// every handshake after it failed; now the reload is refused, naming the
// file and why, and the old certificate goes on serving. A good rotation
// after it is served from the next handshake.
func TestReloadOfAnExpiredCertificateKeepsTheOldOneServing(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	rotate := func(certPEM, keyPEM []byte) {
		writeFile(t, certPath, string(certPEM))
		writeFile(t, keyPath, string(keyPEM))
	}
	writeDev := func() *tls.Certificate {
		c, err := certs.SelfSigned(nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := certs.WritePEM(c, certPath, keyPath); err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := writeDev()
	n := startNode(t, nodeYAML("round_robin", backend(t, "a"))+"tls: {cert: "+certPath+", key: "+keyPath+"}\n")
	served := func() string {
		c, err := tls.Dial("tcp", n.Addrs().HTTPS, insecure())
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return certs.SPKIHash(&tls.Certificate{Leaf: c.ConnectionState().PeerCertificates[0]})
	}
	if got := served(); got != certs.SPKIHash(first) {
		t.Fatalf("serves %s, not the configured certificate", got)
	}

	expiredCert, err := os.ReadFile("../certs/testdata/expired.pem")
	if err != nil {
		t.Fatal(err)
	}
	expiredKey, err := os.ReadFile("../certs/testdata/expired.key")
	if err != nil {
		t.Fatal(err)
	}
	rotate(expiredCert, expiredKey)
	if err := n.Reload(); err == nil || !strings.Contains(err.Error(), certPath+":1: the certificate expired") {
		t.Fatalf("reload with an expired certificate: %v", err)
	}
	if got := served(); got != certs.SPKIHash(first) {
		t.Fatalf("after the refused reload the node serves %s, not the old certificate", got)
	}

	second := writeDev()
	if err := n.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := served(); got != certs.SPKIHash(second) {
		t.Fatalf("after rotation the node serves %s, not the new certificate", got)
	}
}
