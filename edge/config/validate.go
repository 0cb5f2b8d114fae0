package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"perigee/certs/acme"
	"perigee/connlimit"
	"perigee/edge/route"
	"perigee/edge/samplebackend"
	"perigee/edge/urlpath"
	"perigee/files"
	"perigee/geo"
	"perigee/geo/geoip"
	"perigee/loopback"
	"perigee/mesh"
	"perigee/policies/actuator"
	"perigee/via"
)

func (c *Config) validate(v *validator) {
	c.validateNode(v)
	c.validateListen(v)
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		v.at(p("tls"), "tls needs both cert and key, or neither for a generated dev certificate")
	}
	c.validateACME(v)
	v.part(p("limits", "connections"), "limits.connections: ", c.Limits.Connections.Validate())
	if m := c.Limits.MaxRequestsPerClient; m < 0 || m > connlimit.MaxBound {
		v.at(p("limits", "max_requests_per_client"), "limits.max_requests_per_client must be 0 (no bound) to %d, got %d", connlimit.MaxBound, m)
	}
	if s := *c.AccessLog.Sample; s < 0 || s > 1 {
		v.at(p("access_log", "sample"), "access_log.sample must be between 0 and 1, got %v", s)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
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
	if c.Telemetry != nil {
		v.part(p("telemetry"), "telemetry: ", c.Telemetry.Validate())
	}
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
		if sb.Size < 0 || sb.Size > samplebackend.MaxSize {
			v.at(p("sample_backends", i, "size"), "size must be at most %d bytes (64 MiB), got %d", samplebackend.MaxSize, sb.Size)
		}
	}
}

func (c *Config) validateNode(v *validator) {
	n := c.Node
	if err := via.CheckNode(n.ID); err != nil {
		v.at(p("node", "id"), "%v", err)
	}
	if !geoip.OnEarth(n.Location.Lat, n.Location.Lon) {
		v.at(p("node", "location"), "location lat must be within ±90 and lon within ±180")
	}
	if n.PublicURL != "" && !absoluteURL(n.PublicURL) {
		v.at(p("node", "public_url"), "public_url %q must be an absolute http(s) URL", n.PublicURL)
	}
	if n.Capacity < 0 || n.Capacity > mesh.MaxCapacity {
		v.at(p("node", "capacity"), "capacity must be 0..%d, got %d", mesh.MaxCapacity, n.Capacity)
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
	if _, _, err := net.SplitHostPort(l.Admin); err == nil && !loopback.Host(l.Admin) && c.Admin.TokenFile == "" {
		v.at(p("listen", "admin"), "admin listener %q is not on loopback: set admin.token_file", l.Admin)
	}
}

// validateACME checks the acme section and what it needs of the others: an
// HTTPS listener to serve its certificates, a listener for a challenge, and
// an http_listen address no other listener takes.
func (c *Config) validateACME(v *validator) {
	a := c.ACME
	if a == nil {
		return
	}
	v.part(p("acme"), "acme: ", a.Validate())
	if c.TLS.Cert != "" || c.TLS.Key != "" {
		v.at(p("tls"), "tls.cert and tls.key cannot be used with acme: the CA's certificates are served")
	}
	if c.Listen.HTTPS == "" {
		v.at(p("acme"), "acme needs listen.https to serve its certificates on")
	}
	need := map[string]string{acme.TLSALPN01: "listen.https", acme.HTTP01: "acme.http_listen"}
	have := map[string]bool{acme.TLSALPN01: c.Listen.HTTPS != "", acme.HTTP01: a.HTTPListen != ""}
	answerable, missing := false, []string(nil)
	for _, ch := range a.Challenges {
		switch {
		case have[ch]:
			answerable = true
		case need[ch] != "":
			missing = append(missing, ch+" needs "+need[ch])
		}
	}
	if !answerable && len(missing) > 0 {
		v.at(p("acme", "challenges"), "acme: no challenge can be answered: %s", strings.Join(missing, ", "))
	}
	if a.HTTPListen == "" {
		return
	}
	if _, port, err := net.SplitHostPort(a.HTTPListen); err == nil && port != "0" {
		for _, l := range []struct{ key, addr string }{{"https", c.Listen.HTTPS}, {"http", c.Listen.HTTP}, {"admin", c.Listen.Admin}} {
			if l.addr == a.HTTPListen {
				v.at(p("acme", "http_listen"), "acme.http_listen %q is already used by listen.%s", a.HTTPListen, l.key)
			}
		}
		for i, sb := range c.SampleBackends {
			if sb.Listen == a.HTTPListen {
				v.at(p("acme", "http_listen"), "acme.http_listen %q is already used by sample_backends[%d]", a.HTTPListen, i)
			}
		}
	}
}

func (c *Config) validateService(v *validator, name string, s *Service) {
	at := p("services", name)
	if s == nil {
		v.at(at, "service %q is empty", name)
		return
	}
	label := fmt.Sprintf("service %q: ", name)
	v.part(at, label, s.Config.Validate())
	if len(s.Backends) == 0 && !s.Discovery.Enabled() && (s.Scale == nil || s.Scale.Actuator != actuator.KindProcess) {
		v.at(append(at, "backends"), "service %q has no backends (only a discovered or process-scaled service finds its own)", name)
	}
	if s.Scale != nil {
		v.part(append(at, "scale"), label, s.Scale.Validate())
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
	} else if norm, q, err := urlpath.Normalize(m.PathPrefix); m.PathPrefix != "" && (err != nil || q != "" || norm != m.PathPrefix) {
		// Requests are routed on their normal path: any other prefix never matches.
		v.at(p("routes", i, "match", "path_prefix"), "route %q: path_prefix %q is not a normal path (see Paths in docs/config.md)", r.Name, m.PathPrefix)
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
		if !route.ValidMethod(meth) {
			v.at(p("routes", i, "match", "methods"), "route %q: method %q can never match: the node takes only methods of A-Z, 0-9, - and _", r.Name, meth)
		}
	}
}

func (c *Config) validateTransforms(v *validator) {
	for _, name := range slices.Sorted(maps.Keys(c.Transforms)) {
		t := c.Transforms[name]
		at := p("transforms", name)
		if t == nil || t.Module == "" {
			v.at(at, "transform %q needs a module (a .wasm file)", name)
		}
		if t == nil {
			continue
		}
		v.part(at, fmt.Sprintf("transform %q: ", name), t.Validate())
		for _, cluster := range slices.Sorted(maps.Keys(t.Clusters)) {
			if _, ok := c.Services[t.Clusters[cluster]]; !ok {
				v.at(append(at, "clusters", cluster), "transform %q: cluster %q names unknown service %q", name, cluster, t.Clusters[cluster])
			}
		}
	}
}

func (c *Config) validatePolicies(v *validator) {
	for _, name := range slices.Sorted(maps.Keys(c.Policies)) {
		pc := c.Policies[name]
		at := p("policies", name)
		if pc == nil {
			v.at(at, "policy %q needs a script (a .lua file)", name)
			continue
		}
		v.part(at, fmt.Sprintf("policy %q: ", name), pc.Validate())
		for j, s := range pc.Services {
			if _, ok := c.Services[s]; !ok {
				v.at(append(at, "services", j), "policy %q: unknown service %q", name, s)
			}
		}
	}
}

// absoluteURL is a URL a redirect can name: http(s), with a host.
func absoluteURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

func (c *Config) validateGeo(v *validator) {
	g := c.Geo
	if g == nil {
		return
	}
	v.part(p("geo"), "geo: ", g.Config.Validate())
	for i, n := range g.Nodes {
		if n.ID == "" || n.PublicURL == "" {
			v.at(p("geo", "nodes", i), "geo.nodes: each node needs id and public_url")
		}
		if n.PublicURL != "" && !absoluteURL(n.PublicURL) {
			// Redirects go to it with the path after it.
			v.at(p("geo", "nodes", i, "public_url"), "geo.nodes: public_url %q must be an absolute http(s) URL", n.PublicURL)
		}
		if !geoip.OnEarth(n.Location.Lat, n.Location.Lon) {
			v.at(p("geo", "nodes", i, "location"), "geo.nodes: location lat must be within ±90 and lon within ±180")
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
		if err := files.Check(path); err != nil {
			v.at(at, "%s: %v", what, err)
		}
	}
	check(c.TLS.Cert, p("tls", "cert"), "tls.cert")
	check(c.TLS.Key, p("tls", "key"), "tls.key")
	check(c.Admin.TokenFile, p("admin", "token_file"), "admin.token_file")
	if c.ACME != nil {
		check(c.ACME.CARoots, p("acme", "ca_roots"), "acme.ca_roots")
	}
	for _, name := range slices.Sorted(maps.Keys(c.Transforms)) {
		if t := c.Transforms[name]; t != nil {
			check(t.Module, p("transforms", name, "module"), fmt.Sprintf("transform %q module", name))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Policies)) {
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

// field is the path a part's error starts with: "backends[2]: ...",
// "health.path: ...".
var field = regexp.MustCompile(`^([a-z_]+(?:\.[a-z_]+|\[\d+\])*): (.*)$`)

// part reports each error a part's Validate returned at the key its leading
// field names under base (the part's section), with label before the rest.
func (v *validator) part(base []any, label string, err error) {
	if err == nil {
		return
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			v.part(base, label, e)
		}
		return
	}
	path, msg := slices.Clone(base), err.Error()
	if m := field.FindStringSubmatch(msg); m != nil {
		msg = m[2]
		for _, step := range strings.FieldsFunc(m[1], func(r rune) bool { return r == '.' || r == '[' || r == ']' }) {
			if i, err := strconv.Atoi(step); err == nil {
				path = append(path, i)
			} else {
				path = append(path, step)
			}
		}
	}
	v.at(path, "%s%s", label, msg)
}
