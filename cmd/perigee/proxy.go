package main

import (
	"fmt"
	"io"
	"net"
	"strings"

	"go.yaml.in/yaml/v3"

	"perigee/edge/config"
)

// proxyCmd is `perigee proxy --from :8443 --to 127.0.0.1:3000`: one
// address proxied to one backend over HTTP/1.1, HTTP/2 and HTTP/3, with a
// generated dev certificate unless --cert and --key name one. It is an
// ordinary node whose config is made here instead of read from a file.
func proxyCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("proxy", stderr)
	from := fs.String("from", ":8443", "address to serve HTTPS and HTTP/3 on")
	to := fs.String("to", "", "backend to proxy to: host:port or http(s)://host:port")
	admin := fs.String("admin", "127.0.0.1:0", "admin address (port 0: any free port)")
	cert := fs.String("cert", "", "certificate PEM file (default: a generated dev certificate)")
	key := fs.String("key", "", "private key PEM file for --cert")
	logFormat := fs.String("log-format", "auto", "auto, json or text")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *to == "" {
		fmt.Fprintln(stderr, "perigee proxy: --to is required, e.g. --to 127.0.0.1:3000")
		return errUsage
	}
	log, sink, err := newLogger(*logFormat, stderr)
	if err != nil {
		return err
	}
	defer closeLog(sink)
	cfg, err := proxyConfig(*from, *to, *admin, *cert, *key)
	if err != nil {
		return err
	}
	return runNode(cfg, log, sink.Dropped, stdout, nil)
}

// proxyConfig is the config of a node proxying from to to, checked as a
// file's would be.
func proxyConfig(from, to, admin, cert, key string) (*config.Config, error) {
	backend := to
	if !strings.Contains(to, "://") {
		backend = "http://" + to
	}
	if _, _, err := net.SplitHostPort(from); err != nil {
		return nil, fmt.Errorf("perigee proxy: --from %q is not host:port (e.g. :8443): %w", from, errUsage)
	}
	doc := map[string]any{
		"listen":   map[string]string{"https": from, "admin": admin},
		"tls":      map[string]string{"cert": cert, "key": key},
		"services": map[string]any{"backend": map[string]any{"backends": []map[string]string{{"url": backend}}}},
		"routes":   []map[string]any{{"name": "all", "match": map[string]string{"path_prefix": "/"}, "service": "backend"}},
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Parse("perigee proxy", b)
	if err != nil {
		return nil, fmt.Errorf("%w\n(the flags made this config:\n%s)", err, b)
	}
	return cfg, nil
}
