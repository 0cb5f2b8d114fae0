// Package config reads and validates a node's YAML configuration. Decoding
// is strict (an unknown key is an error) and every error names file:line.
package config

import (
	"time"

	"go.yaml.in/yaml/v3"

	"perigee/geo"
	"perigee/mesh"
	"perigee/policies/actuator"
)

// Config is one node's whole configuration.
type Config struct {
	Node           Node                  `yaml:"node" json:"node"`
	Listen         Listen                `yaml:"listen" json:"listen"`
	TLS            TLS                   `yaml:"tls" json:"tls"`
	Admin          Admin                 `yaml:"admin" json:"admin"`
	Timeouts       Timeouts              `yaml:"timeouts" json:"timeouts"`
	Limits         Limits                `yaml:"limits" json:"limits"`
	AccessLog      AccessLog             `yaml:"access_log" json:"access_log"`
	Services       map[string]*Service   `yaml:"services" json:"services"`
	Routes         []*Route              `yaml:"routes" json:"routes"`
	SampleBackends []SampleBackend       `yaml:"sample_backends" json:"sample_backends,omitempty"`
	Transforms     map[string]*Transform `yaml:"transforms" json:"transforms,omitempty"`
	Policies       map[string]*Policy    `yaml:"policies" json:"policies,omitempty"`
	Telemetry      *Telemetry            `yaml:"telemetry" json:"telemetry,omitempty"`
	Geo            *Geo                  `yaml:"geo" json:"geo,omitempty"`
	Mesh           *mesh.Config          `yaml:"mesh" json:"mesh,omitempty"`

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

// TLS names the certificate files; both empty means a generated dev cert.
type TLS struct {
	Cert string `yaml:"cert" json:"cert,omitempty"`
	Key  string `yaml:"key" json:"key,omitempty"`
}

// Admin secures the admin listener.
type Admin struct {
	TokenFile string `yaml:"token_file" json:"token_file,omitempty"`
}

// Timeouts bound every phase of a request.
type Timeouts struct {
	Connect        Duration `yaml:"connect" json:"connect"`
	ResponseHeader Duration `yaml:"response_header" json:"response_header"`
	Idle           Duration `yaml:"idle" json:"idle"`
	ReadHeader     Duration `yaml:"read_header" json:"read_header"`
	Drain          Duration `yaml:"drain" json:"drain"`
}

// Limits protect the node from oversized requests.
type Limits struct {
	MaxHeaderBytes ByteSize `yaml:"max_header_bytes" json:"max_header_bytes"`
	MaxBodyBytes   ByteSize `yaml:"max_body_bytes" json:"max_body_bytes"` // 0 = no limit
}

// AccessLog controls the structured access log.
type AccessLog struct {
	Enabled *bool    `yaml:"enabled" json:"enabled"`
	Sample  *float64 `yaml:"sample" json:"sample"` // share of successful requests logged; errors always are
}

// Service is a pool of backends behind one balancer.
type Service struct {
	Balancer string    `yaml:"balancer" json:"balancer"`
	Hash     HashKey   `yaml:"hash" json:"hash,omitzero"`
	Backends []Backend `yaml:"backends" json:"backends"`
	Health   Health    `yaml:"health" json:"health"`
	Outlier  Outlier   `yaml:"outlier" json:"outlier"`
	Retry    Retry     `yaml:"retry" json:"retry"`
	// Scale lets policies set the service's replica count through an actuator.
	Scale *actuator.Spec `yaml:"scale" json:"scale,omitempty"`
}

// Backend is one upstream server.
type Backend struct {
	URL    string `yaml:"url" json:"url"`
	Weight int    `yaml:"weight" json:"weight"`
}

// HashKey chooses what the hash balancer hashes: exactly one of the three.
type HashKey struct {
	Header   string `yaml:"header" json:"header,omitempty"`
	Cookie   string `yaml:"cookie" json:"cookie,omitempty"`
	ClientIP bool   `yaml:"client_ip" json:"client_ip,omitempty"`
}

// Health configures active checks; an empty path turns them off.
type Health struct {
	Path     string   `yaml:"path" json:"path,omitempty"`
	Interval Duration `yaml:"interval" json:"interval"`
	Timeout  Duration `yaml:"timeout" json:"timeout"`
	Rise     int      `yaml:"rise" json:"rise"`
	Fall     int      `yaml:"fall" json:"fall"`
}

// Outlier configures passive ejection of failing backends.
type Outlier struct {
	ConsecutiveFailures int      `yaml:"consecutive_failures" json:"consecutive_failures"`
	BaseEjection        Duration `yaml:"base_ejection" json:"base_ejection"`
	MaxEjection         Duration `yaml:"max_ejection" json:"max_ejection"`
	MaxEjectedPercent   int      `yaml:"max_ejected_percent" json:"max_ejected_percent"`
}

// Retry configures retries of idempotent requests that failed to connect.
type Retry struct {
	Attempts int     `yaml:"attempts" json:"attempts"` // extra tries after the first
	Budget   float64 `yaml:"budget" json:"budget"`     // retries allowed per request, on average
}

// Route sends matching requests to a service.
type Route struct {
	Name       string   `yaml:"name" json:"name"`
	Match      Match    `yaml:"match" json:"match"`
	Service    string   `yaml:"service" json:"service"`
	Transforms []string `yaml:"transforms" json:"transforms,omitempty"` // in order on the request, reversed on the response
	Steer      string   `yaml:"steer" json:"steer,omitempty"`           // redirect, alt-svc, proxy or off (default)
}

// Match selects requests; empty fields match everything.
type Match struct {
	Host       string   `yaml:"host" json:"host,omitempty"`
	PathPrefix string   `yaml:"path_prefix" json:"path_prefix,omitempty"`
	Methods    []string `yaml:"methods" json:"methods,omitempty"`
}

// SampleBackend is a built-in demo backend the node runs in-process.
type SampleBackend struct {
	Listen    string   `yaml:"listen" json:"listen"`
	Name      string   `yaml:"name" json:"name"`
	Latency   Duration `yaml:"latency" json:"latency"`
	ErrorRate float64  `yaml:"error_rate" json:"error_rate"`
	Size      ByteSize `yaml:"size" json:"size"`
}

// Transform is a Wasm module with its guest config and limits.
type Transform struct {
	Module  string   `yaml:"module" json:"module"`
	Config  any      `yaml:"config" json:"config,omitempty"` // a string is passed as bytes, a mapping as JSON
	Pool    int      `yaml:"pool" json:"pool"`
	Memory  ByteSize `yaml:"memory" json:"memory"`
	Timeout Duration `yaml:"timeout" json:"timeout"`
}

// Policy is a Lua scaling policy.
type Policy struct {
	Script   string   `yaml:"script" json:"script"`
	Interval Duration `yaml:"interval" json:"interval"`
	Timeout  Duration `yaml:"timeout" json:"timeout,omitempty"`
	Services []string `yaml:"services" json:"services"`
	DryRun   bool     `yaml:"dry_run" json:"dry_run"`
}

// Telemetry ships the node's metrics and decisions to an aggregator.
type Telemetry struct {
	Aggregator         string   `yaml:"aggregator" json:"aggregator"`
	TokenFile          string   `yaml:"token_file" json:"token_file"`
	Spool              Spool    `yaml:"spool" json:"spool"`
	Interval           Duration `yaml:"interval" json:"interval"`
	CAFile             string   `yaml:"ca_file" json:"ca_file,omitempty"`
	InsecureSkipVerify bool     `yaml:"insecure_skip_verify" json:"insecure_skip_verify,omitempty"`
}

// Spool bounds the on-disk queue of unacknowledged batches.
type Spool struct {
	Dir string   `yaml:"dir" json:"dir"`
	Max ByteSize `yaml:"max" json:"max"`
}

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

// Duration is a time.Duration written as "250ms", "2s", "1m".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ByteSize is a size written as 512, "64KiB", "16MiB", "1GiB" or "1GB".
type ByteSize int64
