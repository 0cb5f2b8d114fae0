// Package config reads and validates a node's YAML configuration. Decoding
// is strict (an unknown key is an error) and every error names file:line.
// Each part owns its settings type, its defaults and its Validate; the
// config composes them, turns the field a part's error names into a line,
// and checks what spans sections.
package config

import (
	"go.yaml.in/yaml/v3"

	"perigee/certs/acme"
	"perigee/connlimit"
	"perigee/edge/proxy"
	"perigee/edge/samplebackend"
	"perigee/edge/upstream"
	"perigee/geo"
	"perigee/mesh"
	"perigee/policies"
	"perigee/policies/actuator"
	"perigee/runtime/wasm"
	"perigee/telemetry/ship"
	"perigee/units"
)

// Config is one node's whole configuration.
type Config struct {
	Node           Node                      `yaml:"node" json:"node"`
	Listen         Listen                    `yaml:"listen" json:"listen"`
	TLS            TLS                       `yaml:"tls" json:"tls"`
	ACME           *acme.Config              `yaml:"acme" json:"acme,omitempty"`
	Admin          Admin                     `yaml:"admin" json:"admin"`
	Timeouts       Timeouts                  `yaml:"timeouts" json:"timeouts"`
	Limits         Limits                    `yaml:"limits" json:"limits"`
	AccessLog      AccessLog                 `yaml:"access_log" json:"access_log"`
	Services       map[string]*Service       `yaml:"services" json:"services"`
	Routes         []*Route                  `yaml:"routes" json:"routes"`
	SampleBackends []SampleBackend           `yaml:"sample_backends" json:"sample_backends,omitempty"`
	Transforms     map[string]*Transform     `yaml:"transforms" json:"transforms,omitempty"`
	Policies       map[string]*policies.Spec `yaml:"policies" json:"policies,omitempty"`
	Telemetry      *ship.Config              `yaml:"telemetry" json:"telemetry,omitempty"`
	Geo            *Geo                      `yaml:"geo" json:"geo,omitempty"`
	Mesh           *mesh.Config              `yaml:"mesh" json:"mesh,omitempty"`

	// Path is the file the config was read from ("" for the embedded default).
	Path string     `yaml:"-" json:"path"`
	root *yaml.Node // the parsed document, for positions in later errors
}

// Node describes this node to clients and to the fleet.
type Node struct {
	ID        string   `yaml:"id" json:"id"`
	Region    string   `yaml:"region" json:"region"`
	Zone      string   `yaml:"zone" json:"zone,omitempty"`
	Location  Location `yaml:"location" json:"location"`
	PublicURL string   `yaml:"public_url" json:"public_url"`
	Capacity  int      `yaml:"capacity" json:"capacity"` // requests in flight it is sized for
}

// Location is a point on the globe, in degrees.
type Location struct {
	Lat float64 `yaml:"lat" json:"lat"`
	Lon float64 `yaml:"lon" json:"lon"`
}

// Listen holds the node's addresses.
type Listen struct {
	HTTPS string `yaml:"https" json:"https"` // TCP for HTTP/1.1 + HTTP/2 and UDP for HTTP/3
	HTTP  string `yaml:"http" json:"http,omitempty"`
	Admin string `yaml:"admin" json:"admin"`
}

// TLS names the certificate files; both empty means a generated dev cert,
// unless the acme section gets certificates from a CA.
type TLS struct {
	Cert string `yaml:"cert" json:"cert,omitempty"`
	Key  string `yaml:"key" json:"key,omitempty"`
}

// Admin secures the admin listener.
type Admin struct {
	TokenFile string `yaml:"token_file" json:"token_file,omitempty"`
}

// Timeouts bound every phase of a request: the proxy's, and the listeners'
// header read and shutdown drain.
type Timeouts struct {
	proxy.Timeouts `yaml:",inline" json:",inline"`
	ReadHeader     units.Duration `yaml:"read_header" json:"read_header"`
	Drain          units.Duration `yaml:"drain" json:"drain"`
}

// Limits protect the node from oversized requests, and each listener
// from more connections than it should hold.
type Limits struct {
	MaxHeaderBytes units.ByteSize     `yaml:"max_header_bytes" json:"max_header_bytes"`
	MaxBodyBytes   units.ByteSize     `yaml:"max_body_bytes" json:"max_body_bytes"` // 0 = no limit
	Connections    connlimit.Settings `yaml:"connections" json:"connections"`
	// MaxRequestsPerClient bounds the requests one client address (an
	// IPv4 address, an IPv6 /64) has in flight on the routes at once,
	// over every listener together; 0 = no bound, as one address may be a
	// carrier-grade NAT's hundreds of users.
	MaxRequestsPerClient int `yaml:"max_requests_per_client" json:"max_requests_per_client,omitempty"`
}

// AccessLog controls the structured access log.
type AccessLog struct {
	Enabled *bool    `yaml:"enabled" json:"enabled"`
	Sample  *float64 `yaml:"sample" json:"sample"` // share of successful requests logged; errors always are
	// File takes the access log out of the node's log into its own file,
	// which SIGUSR1 reopens (for logrotate). Empty: the node's log.
	File string `yaml:"file" json:"file,omitempty"`
}

// Service is a pool of backends behind one balancer.
type Service struct {
	upstream.Config `yaml:",inline" json:",inline"`
	// Scale lets policies set the service's replica count through an actuator.
	Scale *actuator.Spec `yaml:"scale" json:"scale,omitempty"`
}

// Route sends matching requests to a service.
type Route struct {
	Name       string   `yaml:"name" json:"name"`
	Match      Match    `yaml:"match" json:"match"`
	Service    string   `yaml:"service" json:"service"`
	Transforms []string `yaml:"transforms" json:"transforms,omitempty"` // in order on the request, reversed on the response
	Steer      string   `yaml:"steer" json:"steer,omitempty"`           // redirect, alt-svc, proxy or off (default)
	// Timeouts override the node's stream timeouts for this route.
	Timeouts proxy.Stream `yaml:"timeouts" json:"timeouts,omitempty"`
}

// Match selects requests; empty fields match everything.
type Match struct {
	Host       string   `yaml:"host" json:"host,omitempty"`
	PathPrefix string   `yaml:"path_prefix" json:"path_prefix,omitempty"`
	Methods    []string `yaml:"methods" json:"methods,omitempty"`
}

// SampleBackend is a built-in demo backend the node runs in-process.
type SampleBackend struct {
	Listen                string `yaml:"listen" json:"listen"`
	samplebackend.Options `yaml:",inline" json:",inline"`
}

// Transform is a Wasm module with its guest config and limits; the Wasm
// host owns the settings, their defaults and their checks.
type Transform = wasm.Settings

// Geo configures the GeoIP router. Until the mesh knows the fleet, the
// nodes listed here (this one included) are the candidates.
type Geo struct {
	geo.Config `yaml:",inline" json:",inline"`
	Nodes      []GeoNode `yaml:"nodes" json:"nodes,omitempty"`
}

// GeoNode is one node of a static fleet.
type GeoNode struct {
	ID        string   `yaml:"id" json:"id"`
	Region    string   `yaml:"region" json:"region"`
	Location  Location `yaml:"location" json:"location"`
	PublicURL string   `yaml:"public_url" json:"public_url"`
	Addrs     []string `yaml:"addrs" json:"addrs,omitempty"` // for GeoDNS answers
	Capacity  int      `yaml:"capacity" json:"capacity"`
}
