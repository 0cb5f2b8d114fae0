package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"

	"perigee/certs"
	"perigee/certs/acme"
	"perigee/files"
	"perigee/policies"
	"perigee/policies/actuator"
	"perigee/runtime/wasm"
)

// Check reads, decodes and validates the file at path and then does what a
// node does with it short of opening sockets: it loads the certificate,
// the admin token (to the bound serve reads it to) and the ACME CA roots,
// builds each actuator, compiles every policy and every Wasm module (to
// its bound), and opens the GeoIP database. It reports every problem it
// finds in one error, one "file:line: what" a line, in the order of the
// file.
func Check(ctx context.Context, path string) (*Config, error) {
	b, err := files.Read(path, maxConfigBytes)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, v, err := decode(path, b)
	if err != nil {
		return nil, err
	}
	c.check(ctx, v)
	v.sortByLine()
	if err := v.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// check runs the parts' own loading on what the file names. A file that
// cannot be read was reported by validateFiles already, so it is skipped.
func (c *Config) check(ctx context.Context, v *validator) {
	if c.TLS.Cert != "" && c.TLS.Key != "" && readable(c.TLS.Cert) && readable(c.TLS.Key) {
		if _, err := certs.Load(c.TLS.Cert, c.TLS.Key, nil); err != nil {
			v.at(p("tls"), "%v", err)
		}
	}
	if c.Admin.TokenFile != "" {
		_, err := files.ReadToken(c.Admin.TokenFile)
		var empty *files.EmptyError
		if tooLarge(err) || errors.As(err, &empty) {
			v.at(p("admin", "token_file"), "admin.token_file: %v", err)
		}
	}
	if t := c.Telemetry; t != nil {
		token, ca := t.CheckFiles()
		if token != nil && readable(t.TokenFile) {
			v.at(p("telemetry", "token_file"), "telemetry.token_file: %v", token)
		}
		if ca != nil && readable(t.CAFile) {
			v.at(p("telemetry", "ca_file"), "telemetry.%v", ca)
		}
	}
	if c.ACME != nil && c.ACME.CARoots != "" && readable(c.ACME.CARoots) {
		if _, err := acme.LoadRoots(c.ACME.CARoots); err != nil {
			v.at(p("acme", "ca_roots"), "%v", err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		svc := c.Services[name]
		if svc == nil || svc.Scale == nil || svc.Scale.Validate() != nil {
			continue
		}
		// Building an actuator starts nothing: it parses its command,
		// reads its kubeconfig or checks its URL.
		if _, err := actuator.New(name, *svc.Scale, noBackends{}, slog.New(slog.DiscardHandler)); err != nil {
			v.at(p("services", name, "scale"), "service %q: %v", name, err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Policies)) {
		spec := c.Policies[name]
		if spec == nil || spec.Validate() != nil || !readable(spec.Script) {
			continue
		}
		_, err := policies.NewEngine(policies.EngineConfig{Source: noFigures{}, Policies: []policies.Spec{*spec}})
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), "policies: policy "+name+": ")
			v.at(p("policies", name, "script"), "policy %q: %s", name, msg)
		}
	}
	c.checkModules(ctx, v)
	if c.Geo != nil && c.Geo.Database != "" && readable(c.Geo.Database) {
		// The full check serve leaves out to start fast: a damaged or
		// truncated database is caught here, before it is deployed.
		if err := c.Geo.CheckDatabase(); err != nil {
			v.at(p("geo", "database"), "geo.database: %v", err)
		}
	}
}

// checkModules compiles each module and checks its exports and imports, as
// loading a transform does, without instantiating its pool.
func (c *Config) checkModules(ctx context.Context, v *validator) {
	if len(c.Transforms) == 0 {
		return
	}
	host, err := wasm.NewHost(wasm.Options{})
	if err != nil {
		v.at(p("transforms"), "wasm runtime: %v", err)
		return
	}
	defer host.Close(ctx)
	for _, name := range slices.Sorted(maps.Keys(c.Transforms)) {
		t := c.Transforms[name]
		if t == nil || t.Module == "" {
			continue
		}
		if _, err := wasm.EncodeConfig(t.Config, "."); err != nil {
			v.at(p("transforms", name, "config"), "transform %q config: %v", name, err)
		}
		bin, err := files.Read(t.Module, MaxModuleBytes)
		if tooLarge(err) {
			v.at(p("transforms", name, "module"), "transform %q: %v", name, err)
		}
		if err != nil {
			continue
		}
		if err := host.Validate(ctx, bin); err != nil {
			v.at(p("transforms", name, "module"), "transform %q: %s: %v", name, t.Module, err)
		}
	}
}

func readable(path string) bool { return files.Check(path) == nil }

// tooLarge is the one read error validateFiles cannot have reported: it
// opens the file but does not read it.
func tooLarge(err error) bool {
	var e *files.TooLargeError
	return errors.As(err, &e)
}

// noFigures lets an engine be built only to compile its policies.
type noFigures struct{}

func (noFigures) Snapshot() policies.Snapshot { return policies.Snapshot{} }
func (noFigures) Leadership() (uint64, bool)  { return 0, false }

var _ policies.Source = noFigures{}

// noBackends lets an actuator be built only to check its settings.
type noBackends struct{}

func (noBackends) AddBackend(string, string) error    { return nil }
func (noBackends) RemoveBackend(string, string) error { return nil }

var _ actuator.Registry = noBackends{}

// sortByLine orders the errors as the file does, so a reader can walk it
// from the top; errors on one line keep the order they were found in.
func (v *validator) sortByLine() {
	slices.SortStableFunc(v.errs, func(a, b string) int { return lineOf(a, v.file) - lineOf(b, v.file) })
}

func lineOf(msg, file string) int {
	rest, ok := strings.CutPrefix(msg, file+":")
	if !ok {
		return 0
	}
	n, _ := strconv.Atoi(rest[:max(strings.IndexByte(rest, ':'), 0)])
	return n
}
