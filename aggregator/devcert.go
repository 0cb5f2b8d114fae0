package aggregator

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"perigee/certs"
)

// DevCertFile is where, under the data directory, the self-signed
// development certificate is kept; nodes can trust it with ca_file.
const DevCertFile = "dev-tls/cert.pem"

// loadCertificate returns the configured certificate, or the development
// one, created on first use and reused after, so nodes keep trusting it
// across restarts.
func loadCertificate(cfg Config) (tls.Certificate, error) {
	if cfg.TLS.Cert != "" {
		c, err := certs.Load(cfg.TLS.Cert, cfg.TLS.Key, nil)
		if err != nil {
			return tls.Certificate{}, err
		}
		return *c, nil
	}
	certPath := filepath.Join(cfg.DataDir, DevCertFile)
	keyPath := filepath.Join(filepath.Dir(certPath), "key.pem")
	// A dev certificate lasts a week: reuse it while it has a day left.
	if c, err := certs.Load(certPath, keyPath, nil); err == nil && time.Until(c.Leaf.NotAfter) > 24*time.Hour {
		return *c, nil
	}
	if err := os.MkdirAll(filepath.Dir(certPath), 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: %w", err)
	}
	dev, err := certs.SelfSigned(nil)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := certs.WritePEM(dev, certPath, keyPath); err != nil {
		return tls.Certificate{}, err
	}
	return *dev, nil
}
