package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/quic-go/quic-go/http3"

	"perigee/certs"
)

// target is one server under test, ready on addr.
type target struct {
	name   string
	addr   string   // host:port; TCP, and UDP for h3
	tls    bool     // false only for the bare backend
	protos []string // what it serves: h1, h2, h3
	proc   *child
	route  string // perigee's route other than plain (routes.go), else empty
	path   string // what the load asks for; empty is /
	admin  string // perigee's admin API
}

func (t *target) url() string {
	path := t.path
	if path == "" {
		path = "/"
	}
	if t.tls {
		return "https://" + t.addr + path
	}
	return "http://" + t.addr + path
}

// checkTools fails early, naming the Debian package, when a program that
// the chosen targets or protocols need is missing.
func checkTools(o options) error {
	type tool struct{ prog, pkg string }
	var need []tool
	if slices.Contains(o.targets, "caddy") {
		need = append(need, tool{"caddy", "caddy"})
	}
	if slices.Contains(o.targets, "nginx") {
		need = append(need, tool{"nginx", "nginx"})
	}
	if slices.Contains(o.protos, "h1") {
		need = append(need, tool{"wrk", "wrk"})
	}
	if slices.Contains(o.protos, "h2") {
		need = append(need, tool{"h2load", "nghttp2-client"})
	}
	if o.perf {
		need = append(need, tool{"perf", "linux-perf"})
	}
	var errs []error
	for _, t := range need {
		if _, err := exec.LookPath(t.prog); err != nil {
			errs = append(errs, fmt.Errorf("%s not found: apt-get install %s", t.prog, t.pkg))
		}
	}
	if _, err := os.Stat(o.perigeeBin); err != nil {
		errs = append(errs, fmt.Errorf("perigee binary: %w (run make build)", err))
	}
	if slices.Contains(o.targets, "base") {
		if _, err := os.Stat(o.baseBin); err != nil {
			errs = append(errs, fmt.Errorf("base binary (-base): %w", err))
		}
	}
	if slices.Contains(o.routes, "wasm") && (slices.Contains(o.targets, "perigee") || slices.Contains(o.targets, "base")) {
		if _, err := os.Stat(filepath.Join(o.modules, wasmModule)); err != nil {
			errs = append(errs, fmt.Errorf("route wasm: %w (run make modules; it needs wat2wasm, apt-get install wabt; or leave wasm out of -routes)", err))
		}
	}
	return errors.Join(errs...)
}

// startTargets starts the backend, every chosen proxy in front of it and,
// if chosen, gostack beside it, and waits until each answers. perigee's
// routes other than plain follow it as targets of their own.
func startTargets(ctx context.Context, o options, dir string, kids *children) ([]*target, error) {
	backendAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	backend := &target{name: "backend", addr: backendAddr, protos: []string{"h1"}}
	backend.proc, err = kids.start(dir, "backend", nil, o.perigeeBin, "sample-backend",
		"--listen", backendAddr, "--size", strconv.Itoa(o.size), "--name", "bench")
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, backend); err != nil {
		return nil, err
	}
	var started []*target
	if slices.Contains(o.targets, "backend") {
		started = append(started, backend)
	}

	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := writeCert(cert, key); err != nil {
		return nil, err
	}
	for _, name := range o.targets {
		if name == "backend" {
			continue
		}
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		t := &target{name: name, addr: addr, tls: true, protos: []string{"h1", "h2", "h3"}}
		if name == "nginx" {
			t.protos = []string{"h1", "h2"} // Debian's nginx 1.22 has no HTTP/3
		}
		spare, err := freePort() // for the listeners we do not use but must not be 80 or 9901
		if err != nil {
			return nil, err
		}
		argv, env, err := configure(o, dir, name, addr, spare, backendAddr, cert, key)
		if err != nil {
			return nil, err
		}
		if name == "perigee" || name == "base" {
			t.admin = spare
		}
		if t.proc, err = kids.start(dir, name, env, argv[0], argv[1:]...); err != nil {
			return nil, err
		}
		if err := waitReady(ctx, t); err != nil {
			return nil, err
		}
		started = append(started, t)
		if name == "perigee" {
			routes, err := routeTargets(ctx, o, t)
			if err != nil {
				return nil, err
			}
			started = append(started, routes...)
		}
	}
	return started, nil
}

// configure writes a proxy's config into dir and returns its command line
// and extra environment. All three proxies get the same certificate, the
// same backend, pooled upstream connections and no access log; perigee
// (and base) also the chosen routes beside plain. gostack needs no file:
// its flags are its whole config. spare is for the listeners the run does
// not load (perigee's admin API, Caddy's HTTP port).
func configure(o options, dir, name, addr, spare, backend, cert, key string) (argv, env []string, err error) {
	if name == "gostack" {
		argv, err = gostackArgv(o, addr, cert, key)
		return argv, nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	_, sparePort, _ := net.SplitHostPort(spare)
	data := map[string]string{
		"Dir": dir, "Addr": addr, "Host": host, "Port": port, "Spare": spare, "SparePort": sparePort,
		"Backend": backend, "Cert": cert, "Key": key, "Policy": policyName,
	}
	var tmpl *template.Template
	var file string // defaults to the template's name
	switch name {
	case "perigee", "base":
		bin := o.perigeeBin
		if name == "base" {
			bin = o.baseBin
		}
		tmpl, file = perigeeConf, name+".yaml"
		if data["Module"], data["Script"], err = routeFiles(o, dir); err != nil {
			return nil, nil, err
		}
		argv = []string{bin, "serve", "--config", filepath.Join(dir, file), "--log-format", "text"}
	case "caddy":
		tmpl = caddyConf
		argv = []string{"caddy", "run", "--config", filepath.Join(dir, "Caddyfile"), "--adapter", "caddyfile"}
		// Caddy keeps state under HOME and XDG dirs; keep it in the temp dir.
		env = []string{"HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir}
	case "nginx":
		tmpl = nginxConf
		argv = []string{"nginx", "-p", dir, "-e", filepath.Join(dir, "nginx-error.log"),
			"-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;"}
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, data); err != nil {
		return nil, nil, fmt.Errorf("%s config: %w", name, err)
	}
	if file == "" {
		file = tmpl.Name()
	}
	if err := os.WriteFile(filepath.Join(dir, file), b.Bytes(), 0o644); err != nil {
		return nil, nil, fmt.Errorf("%s config: %w", name, err)
	}
	return argv, env, nil
}

var perigeeConf = template.Must(template.New("perigee.yaml").Parse(`node: {id: bench, region: local}
listen: {https: "{{.Addr}}", admin: "{{.Spare}}"}
tls: {cert: "{{.Cert}}", key: "{{.Key}}"}
access_log: {enabled: false}
services:
  backend:
    balancer: round_robin
    backends: [{url: "http://{{.Backend}}"}]
{{- if .Module}}
transforms:
  poweredby: {module: "{{.Module}}"}
{{- end}}
{{- if .Script}}
policies:
  {{.Policy}}: {script: "{{.Script}}", interval: 50ms}
{{- end}}
routes:
  - {name: plain, match: {path_prefix: /}, service: backend}
{{- if .Module}}
  - {name: wasm, match: {path_prefix: /wasm}, service: backend, transforms: [poweredby]}
{{- end}}
{{- if .Script}}
  - {name: lua, match: {path_prefix: /lua}, service: backend}
{{- end}}
`))

// Caddy 2.6 serves h1, h2 and h3 by default; protocols says so anyway.
// Clients send no SNI to an IP address, and over QUIC Caddy then finds no
// certificate unless default_sni names one. Its
// default of 32 idle upstream connections per host is raised to match
// nginx's keepalive pool, so 64 wrk connections do not churn upstream.
var caddyConf = template.Must(template.New("Caddyfile").Parse(`{
	admin off
	auto_https off
	default_sni {{.Host}}
	http_port {{.SparePort}}
	https_port {{.Port}}
	storage file_system {{.Dir}}/caddy
	servers {
		protocols h1 h2 h3
	}
}
https://{{.Addr}} {
	tls {{.Cert}} {{.Key}}
	reverse_proxy {{.Backend}} {
		transport http {
			keepalive_idle_conns_per_host 128
		}
	}
}
`))

// keepalive_requests is raised from its default of 1000 on both sides:
// otherwise nginx closes every client and upstream connection after 1000
// requests, and the run measures TLS handshakes, not proxying.
var nginxConf = template.Must(template.New("nginx.conf").Parse(`worker_processes auto;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/nginx-error.log warn;
events {
	worker_connections 4096;
}
http {
	access_log off;
	client_body_temp_path {{.Dir}}/nginx-body;
	proxy_temp_path {{.Dir}}/nginx-proxy;
	fastcgi_temp_path {{.Dir}}/nginx-fastcgi;
	uwsgi_temp_path {{.Dir}}/nginx-uwsgi;
	scgi_temp_path {{.Dir}}/nginx-scgi;
	keepalive_requests 1000000;
	upstream backend {
		server {{.Backend}};
		keepalive 128;
		keepalive_requests 1000000;
	}
	server {
		listen {{.Addr}} ssl http2;
		ssl_certificate {{.Cert}};
		ssl_certificate_key {{.Key}};
		location / {
			proxy_pass http://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
`))

// writeCert writes a self-signed ECDSA P-256 certificate for 127.0.0.1 and
// localhost, the key type Caddy and perigee generate themselves.
func writeCert(certFile, keyFile string) error {
	c, err := certs.SelfSigned(nil)
	if err != nil {
		return err
	}
	return certs.WritePEM(c, certFile, keyFile)
}

// freePort returns a loopback address whose port is free on both TCP and
// UDP, so the HTTP/3 listeners can share it.
func freePort() (string, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("find a free port: %w", err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr, nil
		}
	}
	return "", errors.New("find a free port: no port free on both TCP and UDP")
}

// client returns a client that speaks exactly proto to a target.
func client(proto string) http.RoundTripper {
	tlsConf := &tls.Config{InsecureSkipVerify: true} // our own self-signed cert
	switch proto {
	case "h2":
		return &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true}
	case "h3":
		return &http3.Transport{TLSClientConfig: tlsConf}
	}
	return &http.Transport{TLSClientConfig: tlsConf, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
}

// waitReady polls a target over HTTP/1.1 until it answers, and fails early
// with the tail of its log if it exits.
func waitReady(ctx context.Context, t *target) error {
	rt := client("h1")
	defer rt.(*http.Transport).CloseIdleConnections()
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.url(), nil)
		resp, err := rt.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-t.proc.done:
			return fmt.Errorf("%s exited at start: %v\n%s", t.name, t.proc.err, t.proc.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready on %s after 15s: %w\n%s", t.name, t.addr, err, t.proc.logTail())
		}
	}
}

// probe sends one request over proto and checks that the answer is the
// backend's, over that protocol, so a misconfigured proxy fails the run
// instead of filling the table with error pages.
func probe(ctx context.Context, r runKey, size int) error {
	rt := client(r.proto)
	if c, ok := rt.(io.Closer); ok {
		defer c.Close()
	} else {
		defer rt.(*http.Transport).CloseIdleConnections()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.target.url(), nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("probe %s over %s: %w", r.target.name, r.proto, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("probe %s over %s: read body: %w", r.target.name, r.proto, err)
	}
	want := map[string]int{"h1": 1, "h2": 2, "h3": 3}[r.proto]
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != want || resp.Header.Get("X-Backend") != "bench" || len(body) != size {
		return fmt.Errorf("probe %s over %s: got %s %s, X-Backend %q, %d bytes",
			r.target.name, r.proto, resp.Proto, resp.Status, resp.Header.Get("X-Backend"), len(body))
	}
	if got := resp.Header.Get("X-Powered-By"); r.target.route == "wasm" && got != poweredBy {
		return fmt.Errorf("probe %s over %s: x-powered-by %q, want %q: the Wasm transform did not run", r.target.name, r.proto, got, poweredBy)
	}
	return nil
}

// children are the processes this run started. Each runs in its own
// process group, so stopping it also stops its workers (nginx), and dies
// with us if we are killed outright (Pdeathsig).
type children struct {
	mu   sync.Mutex
	list []*child
}

type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // set before done closes
}

func (c *children) start(dir, name string, env []string, prog string, args ...string) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logFile.Close() // the child holds its own copy
	cmd := exec.Command(prog, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	k := &child{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		k.err = cmd.Wait()
		close(k.done)
	}()
	c.mu.Lock()
	c.list = append(c.list, k)
	c.mu.Unlock()
	return k, nil
}

func (c *children) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.list)
}

// stopAll sends SIGTERM to every child's process group, SIGKILL to those
// still there after a few seconds, and then checks that every group is gone.
func (c *children) stopAll() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range slices.Backward(c.list) {
		_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGTERM)
	}
	var errs []error
	for _, k := range c.list {
		select {
		case <-k.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
			<-k.done
		}
		// The leader is reaped; a worker left in its group would answer.
		if err := syscall.Kill(-k.cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
			_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
			errs = append(errs, fmt.Errorf("%s: processes left in group %d were killed", k.name, k.cmd.Process.Pid))
		}
	}
	return errors.Join(errs...)
}

// logTail returns the end of a child's log, for error messages.
func (k *child) logTail() string {
	b, _ := os.ReadFile(k.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
