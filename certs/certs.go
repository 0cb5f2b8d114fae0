// Package certs provides TLS certificates: loaded from files, or a
// generated self-signed development certificate whose SPKI hash is printed so
// that a browser can be told to trust it. It imports nothing of ours but
// the leaf files, so the node, the aggregator, the benchmarks and tests all
// use it.
package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"perigee/files"
)

// Store serves the current certificate and lets a reload swap it, or hands
// every handshake to a Source.
type Store struct {
	cert atomic.Pointer[tls.Certificate]
	src  Source
}

// Source picks the certificate for each handshake, as an ACME manager does.
type Source interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// NextProtos are ALPN protocols its challenges need (acme-tls/1).
	NextProtos() []string
}

// Use makes src answer every handshake instead of the stored certificate.
// It must come before the first TLSConfig.
func (s *Store) Use(src Source) { s.src = src }

// maxPEM bounds a certificate chain or key file: a chain is a few KiB.
const maxPEM = 1 << 20

// Load reads a certificate and key, or generates a dev certificate for hosts
// when both paths are empty. A path that names no regular file (a FIFO
// would block the read for good) or a file over 1 MiB is refused unread.
func Load(certFile, keyFile string, hosts []string) (*tls.Certificate, error) {
	if certFile == "" && keyFile == "" {
		return SelfSigned(hosts)
	}
	certPEM, err := files.Read(certFile, maxPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: loading %s: %w", certFile, err)
	}
	keyPEM, err := files.Read(keyFile, maxPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: loading %s: %w", keyFile, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: loading %s and %s: %w", certFile, keyFile, err)
	}
	if c.Leaf, err = parseChain(certFile, certPEM, len(c.Certificate), time.Now()); err != nil {
		return nil, err
	}
	if err := handshakes(&c); err != nil {
		return nil, fmt.Errorf("tls: %s and %s: no TLS 1.3 handshake can be made with them: %w", certFile, keyFile, err)
	}
	return &c, nil
}

// handshakes makes one TLS 1.3 handshake with c in memory, the version
// every current client and all of HTTP/3 speak. tls.X509KeyPair takes any
// key it parses, and some no handshake can use: an RSA key under 1024
// bits, a P-224 key. Asking crypto/tls itself keeps its rules out of ours.
func handshakes(c *tls.Certificate) error {
	client, server := net.Pipe()
	defer server.Close()
	server.SetDeadline(time.Now().Add(10 * time.Second)) // both ends are ours; a bug must not hang a reload
	go func() {
		tls.Client(client, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}).Handshake()
		client.Close()
	}()
	return tls.Server(server, &tls.Config{Certificates: []tls.Certificate{*c}, MinVersion: tls.VersionTLS13, SessionTicketsDisabled: true}).Handshake()
}

// maxChain bounds the certificates of a chain file: a leaf and its
// intermediates are two to four, and every one goes out in every handshake.
const maxChain = 10

// parseChain parses every certificate of a chain file, where
// tls.X509KeyPair parses only the leaf and never looks at its dates, and
// returns the leaf. It refuses what no client would accept, so that a
// reload keeps the certificate it serves instead: more than maxChain
// certificates, a block that is no certificate, a leaf expired or not yet
// valid, or one whose extended key usage leaves out serverAuth. Each
// refusal names the file and the line of the block.
func parseChain(file string, chainPEM []byte, n int, now time.Time) (*x509.Certificate, error) {
	if n > maxChain {
		return nil, fmt.Errorf("tls: %s holds %d certificates; a chain is at most %d", file, n, maxChain)
	}
	var leaf *x509.Certificate
	rest := chainPEM
	for i := 1; ; {
		begin := bytes.Index(rest, []byte("-----BEGIN"))
		line := 1 + bytes.Count(chainPEM[:len(chainPEM)-len(rest)+max(begin, 0)], []byte("\n"))
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return leaf, nil
		}
		if block.Type != "CERTIFICATE" {
			continue // the key, when both are in one file
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tls: %s:%d: certificate %d of the chain: %w", file, line, i, err)
		}
		if i == 1 {
			switch leaf = c; {
			case now.After(c.NotAfter):
				return nil, fmt.Errorf("tls: %s:%d: the certificate expired at %s", file, line, c.NotAfter.UTC().Format(time.RFC3339))
			case now.Before(c.NotBefore):
				return nil, fmt.Errorf("tls: %s:%d: the certificate is not valid before %s", file, line, c.NotBefore.UTC().Format(time.RFC3339))
			case len(c.ExtKeyUsage) > 0 && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny):
				return nil, fmt.Errorf("tls: %s:%d: the certificate is not for TLS servers: its extended key usage leaves out serverAuth", file, line)
			}
		}
		i++
	}
}

// Set makes c the certificate served from now on.
func (s *Store) Set(c *tls.Certificate) { s.cert.Store(c) }

// Current is the certificate being served.
func (s *Store) Current() *tls.Certificate { return s.cert.Load() }

// TLSConfig serves the store's certificate with the given ALPN protocols,
// or its source's with the source's protocols added. Every listener's config
// comes from here, so HTTP/1.1, HTTP/2 and HTTP/3 serve the same one.
func (s *Store) TLSConfig(protos ...string) *tls.Config {
	if s.src != nil {
		return &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     append(slices.Clip(protos), s.src.NextProtos()...),
			GetCertificate: s.src.GetCertificate,
		}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: protos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert.Load(), nil
		},
	}
}

// SelfSigned makes a one-week ECDSA certificate for hosts (names or IPs)
// plus localhost and the loopback addresses.
func SelfSigned(hosts []string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tls: generating dev key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("tls: dev serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "perigee dev", Organization: []string{"perigee"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("tls: signing dev certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tls: parsing dev certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// SPKIHash is the base64 SHA-256 of the certificate's public key, the value
// Chromium's --ignore-certificate-errors-spki-list takes; "" for none (a
// store whose source picks certificates per handshake).
func SPKIHash(c *tls.Certificate) string {
	if c == nil || c.Leaf == nil {
		return ""
	}
	sum := sha256.Sum256(c.Leaf.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// WritePEM writes c's certificate and private key as PEM files, for
// programs that read certificates from disk (nginx, Caddy, a node's
// ca_file).
func WritePEM(c *tls.Certificate, certFile, keyFile string) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return fmt.Errorf("tls: encoding key: %w", err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o644); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	return nil
}
