package config

import (
	"fmt"
	"os"

	"net"
	"net/netip"
	"net/url"
	"perigee/geo"
	"perigee/policies/actuator"
	"sort"
	"strings"
	"time"
)

// Balancer names.
const (
	RoundRobin   = "round_robin"
	LeastRequest = "least_request"
	EWMA         = "ewma"
	Hash         = "hash"
)

func (c *Config) setDefaults() {
	if c.Node.ID == "" {
		c.Node.ID = "local"
	}
	if c.Node.Region == "" {
		c.Node.Region = "local"
	}
	if c.Node.Capacity == 0 {
		c.Node.Capacity = 1000
	}
	if c.Listen.Admin == "" {
		c.Listen.Admin = "127.0.0.1:9901"
	}
	t := &c.Timeouts
	setDur(&t.Connect, 2*time.Second)
	setDur(&t.ResponseHeader, 30*time.Second)
	setDur(&t.Idle, 90*time.Second)
	setDur(&t.ReadHeader, 10*time.Second)
	setDur(&t.Drain, 30*time.Second)
	if c.Limits.MaxHeaderBytes == 0 {
		c.Limits.MaxHeaderBytes = 64 << 10
	}
	if c.AccessLog.Enabled == nil {
		on := true
		c.AccessLog.Enabled = &on
	}
	if c.AccessLog.Sample == nil {
		all := 1.0
		c.AccessLog.Sample = &all
	}
	for _, s := range c.Services {
		if s == nil {
			continue
		}
		if s.Balancer == "" {
			s.Balancer = RoundRobin
		}
		for i := range s.Backends {
			if s.Backends[i].Weight == 0 {
				s.Backends[i].Weight = 1
			}
		}
		h := &s.Health
		setDur(&h.Interval, 2*time.Second)
		setDur(&h.Timeout, time.Second)
		setInt(&h.Rise, 2)
		setInt(&h.Fall, 3)
		o := &s.Outlier
		setInt(&o.ConsecutiveFailures, 5)
		setDur(&o.BaseEjection, 5*time.Second)
		setDur(&o.MaxEjection, 5*time.Minute)
		setInt(&o.MaxEjectedPercent, 50)
		if s.Retry.Attempts == 0 {
			s.Retry.Attempts = 2
		}
		if s.Retry.Budget == 0 {
			s.Retry.Budget = 0.2
		}
	}
	for i, r := range c.Routes {
		if r != nil && r.Name == "" {
			r.Name = fmt.Sprintf("route-%d", i)
		}
	}
	for i := range c.SampleBackends {
		if c.SampleBackends[i].Name == "" {
			c.SampleBackends[i].Name = c.SampleBackends[i].Listen
		}
	}
}

func setDur(d *Duration, def time.Duration) {
	if *d == 0 {
		*d = Duration(def)
	}
}

func setInt(i *int, def int) {
	if *i == 0 {
		*i = def
	}
}

func (c *Config) validate(v *validator) {
	c.validateNode(v)
	c.validateListen(v)
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		v.at(p("tls"), "tls needs both cert and key, or neither for a generated dev certificate")
	}
	if s := *c.AccessLog.Sample; s < 0 || s > 1 {
		v.at(p("access_log", "sample"), "access_log.sample must be between 0 and 1, got %v", s)
	}
	names := make([]string, 0, len(c.Services))
	for name := range c.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c.validateService(v, name, c.Services[name])
	}
	seen := map[string]int{}
	for i, r := range c.Routes {
		if r == nil {
			v.at(p("routes", i), "empty route")
			continue
		}
		if j, dup := seen[r.Name]; dup {
			v.at(p("routes", i, "name"), "route name %q is used twice (also route %d)", r.Name, j)
		}
		seen[r.Name] = i
		c.validateRoute(v, i, r)
	}
	c.validateTransforms(v)
	c.validatePolicies(v)
	c.validateFiles(v)
	c.validateTelemetry(v)
	c.validateGeo(v)
	if c.Mesh != nil {
		if err := c.Mesh.Validate(); err != nil {
			v.at(p("mesh"), "%v", err)
		}
	}
	for i, sb := range c.SampleBackends {
		if sb.Listen == c.Listen.HTTPS || sb.Listen == c.Listen.HTTP || sb.Listen == c.Listen.Admin {
			v.at(p("sample_backends", i, "listen"), "sample backend %q listens where the node does", sb.Listen)
		}
		if _, err := netip.ParseAddrPort(sb.Listen); err != nil {
			v.at(p("sample_backends", i, "listen"), "sample backend listen %q is not host:port with an IP", sb.Listen)
		}
		if sb.ErrorRate < 0 || sb.ErrorRate > 1 {
			v.at(p("sample_backends", i, "error_rate"), "error_rate must be between 0 and 1")
		}
	}
}

func (c *Config) validateNode(v *validator) {
	n := c.Node
	if n.Location.Lat < -90 || n.Location.Lat > 90 || n.Location.Lon < -180 || n.Location.Lon > 180 {
		v.at(p("node", "location"), "location lat must be within ±90 and lon within ±180")
	}
	if n.PublicURL != "" {
		if u, err := url.Parse(n.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.at(p("node", "public_url"), "public_url %q must be an absolute http(s) URL", n.PublicURL)
		}
	}
	if n.Capacity < 0 {
		v.at(p("node", "capacity"), "capacity must be positive")
	}
}

func (c *Config) validateListen(v *validator) {
	l := c.Listen
	if l.HTTPS == "" && l.HTTP == "" {
		v.at(p("listen"), "listen needs an https or http address")
	}
	used := map[string]string{}
	for _, a := range []struct{ key, addr string }{{"https", l.HTTPS}, {"http", l.HTTP}, {"admin", l.Admin}} {
		if a.addr == "" {
			continue
		}
		_, port, err := net.SplitHostPort(a.addr)
		if err != nil {
			v.at(p("listen", a.key), "listen.%s %q is not host:port", a.key, a.addr)
			continue
		}
		if port == "0" {
			continue // the kernel picks a free port for each
		}
		if other, dup := used[a.addr]; dup {
			v.at(p("listen", a.key), "listen.%s %q is already used by listen.%s", a.key, a.addr, other)
		}
		used[a.addr] = a.key
	}
	if host, _, err := net.SplitHostPort(l.Admin); err == nil && !isLoopback(host) && c.Admin.TokenFile == "" {
		v.at(p("listen", "admin"), "admin listener %q is not on loopback: set admin.token_file", l.Admin)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func (c *Config) validateService(v *validator, name string, s *Service) {
	at := func(rest ...any) []any { return append(p("services", name), rest...) }
	if s == nil {
		v.at(at(), "service %q is empty", name)
		return
	}
	switch s.Balancer {
	case RoundRobin, LeastRequest, EWMA:
	case Hash:
		n := 0
		for _, set := range []bool{s.Hash.Header != "", s.Hash.Cookie != "", s.Hash.ClientIP} {
			if set {
				n++
			}
		}
		if n != 1 {
			v.at(at("hash"), "service %q: the hash balancer needs exactly one of hash.header, hash.cookie, hash.client_ip", name)
		}
	default:
		v.at(at("balancer"), "service %q: unknown balancer %q (round_robin, least_request, ewma, hash)", name, s.Balancer)
	}
	if len(s.Backends) == 0 && (s.Scale == nil || s.Scale.Actuator != "process") {
		v.at(at("backends"), "service %q has no backends (only a process-scaled service starts its own)", name)
	}
	seen := map[string]bool{}
	for i, b := range s.Backends {
		u, err := url.Parse(b.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.at(at("backends", i), "service %q: backend url %q must be http(s)://host:port", name, b.URL)
		} else if u.Path != "" && u.Path != "/" {
			v.at(at("backends", i), "service %q: backend url %q must not have a path", name, b.URL)
		}
		if seen[b.URL] {
			v.at(at("backends", i), "service %q: backend %q is listed twice", name, b.URL)
		}
		seen[b.URL] = true
		if b.Weight < 1 || b.Weight > 1000 {
			v.at(at("backends", i), "service %q: backend weight must be 1..1000, got %d", name, b.Weight)
		}
	}
	h := s.Health
	if h.Path != "" && !strings.HasPrefix(h.Path, "/") {
		v.at(at("health", "path"), "service %q: health path must start with /", name)
	}
	if h.Rise < 1 || h.Fall < 1 {
		v.at(at("health"), "service %q: health rise and fall must be at least 1", name)
	}
	o := s.Outlier
	if o.ConsecutiveFailures < 0 || o.MaxEjectedPercent < 0 || o.MaxEjectedPercent > 100 {
		v.at(at("outlier"), "service %q: outlier consecutive_failures must be ≥ 0 and max_ejected_percent 0..100", name)
	}
	if s.Retry.Attempts < 0 || s.Retry.Budget < 0 || s.Retry.Budget > 1 {
		v.at(at("retry"), "service %q: retry attempts must be ≥ 0 and budget 0..1", name)
	}
	if s.Scale != nil {
		validateScale(v, at("scale"), name, s.Scale)
	}
}

func validateScale(v *validator, at []any, name string, s *actuator.Spec) {
	need := map[string]string{"process": s.Command, "exec": s.Command, "webhook": s.URL, "kubernetes": s.Deployment}
	field := map[string]string{"process": "command", "exec": "command", "webhook": "url", "kubernetes": "deployment"}
	have, known := need[s.Actuator]
	switch {
	case !known:
		v.at(append(at, "actuator"), "service %q: unknown actuator %q (process, exec, webhook, kubernetes)", name, s.Actuator)
	case have == "":
		v.at(at, "service %q: the %s actuator needs scale.%s", name, s.Actuator, field[s.Actuator])
	}
	if s.Min < 0 || (s.Max != 0 && s.Max < s.Min) || s.MaxStep < 0 {
		v.at(at, "service %q: scale needs 0 ≤ min ≤ max and max_step ≥ 0", name)
	}
	if s.Actuator == "process" && !strings.Contains(s.Command, "{addr}") && !strings.Contains(s.Command, "{port}") {
		v.at(append(at, "command"), "service %q: the process command must take {addr} or {port}", name)
	}
}

func (c *Config) validateRoute(v *validator, i int, r *Route) {
	if r.Service == "" {
		v.at(p("routes", i), "route %q has no service", r.Name)
	} else if _, ok := c.Services[r.Service]; !ok {
		v.at(p("routes", i, "service"), "route %q: unknown service %q", r.Name, r.Service)
	}
	m := r.Match
	if m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/") {
		v.at(p("routes", i, "match", "path_prefix"), "route %q: path_prefix must start with /", r.Name)
	}
	if strings.Count(m.Host, "*") > 1 || (strings.Contains(m.Host, "*") && m.Host != "*" && !strings.HasPrefix(m.Host, "*.")) {
		v.at(p("routes", i, "match", "host"), "route %q: host %q: a wildcard is only allowed as \"*\" or a leading \"*.\"", r.Name, m.Host)
	}
	for j, t := range r.Transforms {
		if _, ok := c.Transforms[t]; !ok {
			v.at(p("routes", i, "transforms", j), "route %q: unknown transform %q", r.Name, t)
		}
	}
	if r.Steer != "" {
		if _, err := geo.ParseSteerMode(r.Steer); err != nil {
			v.at(p("routes", i, "steer"), "route %q: %v", r.Name, err)
		} else if c.Geo == nil && r.Steer != "off" {
			v.at(p("routes", i, "steer"), "route %q: steer %q needs a geo section", r.Name, r.Steer)
		}
	}
	for _, meth := range m.Methods {
		if meth == "" || strings.ToUpper(meth) != meth || strings.ContainsAny(meth, " \t/") {
			v.at(p("routes", i, "match", "methods"), "route %q: method %q must be an upper-case token like GET", r.Name, meth)
		}
	}
}

func sortedKeys[T any](m map[string]T) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (c *Config) validateTransforms(v *validator) {
	for _, name := range sortedKeys(c.Transforms) {
		t := c.Transforms[name]
		at := p("transforms", name)
		switch {
		case t == nil || t.Module == "":
			v.at(at, "transform %q needs a module (a .wasm file)", name)
		case t.Pool < 0 || t.Pool > 1024:
			v.at(append(at, "pool"), "transform %q: pool must be 0..1024", name)
		case t.Memory != 0 && (t.Memory < 64<<10 || t.Memory > 4<<30):
			v.at(append(at, "memory"), "transform %q: memory must be 64KiB..4GiB", name)
		}
	}
}

func (c *Config) validatePolicies(v *validator) {
	for _, name := range sortedKeys(c.Policies) {
		pc := c.Policies[name]
		at := p("policies", name)
		if pc == nil || pc.Script == "" {
			v.at(at, "policy %q needs a script (a .lua file)", name)
			continue
		}
		if pc.Interval != 0 && pc.Interval.D() < 50*time.Millisecond {
			v.at(append(at, "interval"), "policy %q: interval must be at least 50ms", name)
		}
		for j, s := range pc.Services {
			if _, ok := c.Services[s]; !ok {
				v.at(append(at, "services", j), "policy %q: unknown service %q", name, s)
			}
		}
	}
}

func (c *Config) validateTelemetry(v *validator) {
	t := c.Telemetry
	if t == nil {
		return
	}
	if u, err := url.Parse(t.Aggregator); err != nil || u.Scheme != "https" || u.Host == "" {
		v.at(p("telemetry", "aggregator"), "telemetry.aggregator %q must be an https:// URL", t.Aggregator)
	}
	if t.TokenFile == "" {
		v.at(p("telemetry"), "telemetry needs token_file: the node's credential")
	}
	if t.Spool.Dir == "" {
		v.at(p("telemetry", "spool"), "telemetry needs spool.dir for batches the aggregator has not acknowledged")
	}
}

func (c *Config) validateGeo(v *validator) {
	g := c.Geo
	if g == nil {
		return
	}
	if err := g.Config.Validate(); err != nil {
		v.at(p("geo"), "geo: %v", err)
	}
	for i, n := range g.Nodes {
		if n.ID == "" || n.PublicURL == "" {
			v.at(p("geo", "nodes", i), "geo.nodes: each node needs id and public_url")
		}
		for _, a := range n.Addrs {
			if _, err := netip.ParseAddr(a); err != nil {
				v.at(p("geo", "nodes", i, "addrs"), "geo.nodes: %q is not an IP address", a)
			}
		}
	}
}

// Pos names the line of a key, as "file:line", for errors found after
// decoding (a module that fails to load, a script that does not compile).
func (c *Config) Pos(path ...any) string {
	v := validator{file: c.Path, root: c.root}
	return fmt.Sprintf("%s:%d", c.Path, v.line(path))
}

// validateFiles checks that every file the config names can be read now, so
// that validate catches what serve would trip on. Relative paths are taken
// from the working directory, as serve takes them.
func (c *Config) validateFiles(v *validator) {
	check := func(path string, at []any, what string) {
		if path == "" {
			return
		}
		f, err := os.Open(path)
		if err != nil {
			v.at(at, "%s: %v", what, err)
			return
		}
		f.Close()
	}
	check(c.TLS.Cert, p("tls", "cert"), "tls.cert")
	check(c.TLS.Key, p("tls", "key"), "tls.key")
	check(c.Admin.TokenFile, p("admin", "token_file"), "admin.token_file")
	for _, name := range sortedKeys(c.Transforms) {
		if t := c.Transforms[name]; t != nil {
			check(t.Module, p("transforms", name, "module"), fmt.Sprintf("transform %q module", name))
		}
	}
	for _, name := range sortedKeys(c.Policies) {
		if pc := c.Policies[name]; pc != nil {
			check(pc.Script, p("policies", name, "script"), fmt.Sprintf("policy %q script", name))
		}
	}
	if c.Telemetry != nil {
		check(c.Telemetry.TokenFile, p("telemetry", "token_file"), "telemetry.token_file")
		check(c.Telemetry.CAFile, p("telemetry", "ca_file"), "telemetry.ca_file")
	}
	if c.Geo != nil {
		check(c.Geo.Database, p("geo", "database"), "geo.database")
	}
}
