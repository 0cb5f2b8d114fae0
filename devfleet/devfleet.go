// Package devfleet starts a local fleet on loopback for `make run FLEET=1`:
// an aggregator and four edge nodes in two regions, meshed, geo-steering and
// shipping telemetry, each a real `perigee` child process.
package devfleet

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"perigee/geo/demodb"
)

// Node is one member of the local fleet.
type Node struct {
	ID, Region string
	Lat, Lon   float64
	Index      int // picks its ports
}

// HTTPS, Admin, Gossip and Backend are the node's loopback addresses.
func (n Node) HTTPS() string   { return fmt.Sprintf("127.0.0.1:%d", 8441+n.Index) }
func (n Node) Admin() string   { return fmt.Sprintf("127.0.0.1:%d", 9911+n.Index) }
func (n Node) Gossip() string  { return fmt.Sprintf("127.0.0.1:%d", 7946+n.Index) }
func (n Node) Backend() string { return fmt.Sprintf("127.0.0.1:%d", 9101+n.Index) }

// Nodes are Frankfurt and Virginia, two of each.
var Nodes = []Node{
	{"fra-1", "eu-central", 50.11, 8.68, 0},
	{"fra-2", "eu-central", 50.11, 8.68, 1},
	{"iad-1", "us-east", 39.04, -77.49, 2},
	{"iad-2", "us-east", 39.04, -77.49, 3},
}

// AggregatorAddr is where the fleet's aggregator and dashboard listen.
const AggregatorAddr = "127.0.0.1:9443"

const devToken = "dev-fleet-token-not-a-secret"

// Run writes the fleet's configs under dir, starts the aggregator and the
// nodes with binary, and stops them all when ctx ends.
func Run(ctx context.Context, binary, dir string, out io.Writer) error {
	if err := writeFiles(dir); err != nil {
		return err
	}
	var children []*child
	defer func() { stopAll(children) }()
	agg, err := start(binary, dir, "aggregator", "aggregate", "--config", filepath.Join(dir, "agg.yaml"))
	if err != nil {
		return err
	}
	children = append(children, agg)
	if err := waitForFile(ctx, filepath.Join(dir, "agg", "dev-tls", "cert.pem"), 30*time.Second); err != nil {
		return fmt.Errorf("the aggregator did not start (see %s): %w", filepath.Join(dir, "aggregator.log"), err)
	}
	for _, n := range Nodes {
		c, err := start(binary, dir, n.ID, "serve", "--config", filepath.Join(dir, n.ID+".yaml"), "--log-format", "json")
		if err != nil {
			return err
		}
		children = append(children, c)
	}
	printGuide(out, dir)
	died := make(chan *child, len(children))
	for _, c := range children {
		go func() {
			<-c.done
			died <- c
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case c := <-died:
		return fmt.Errorf("%s stopped: see %s", c.name, filepath.Join(dir, c.name+".log"))
	}
}

// keyringFile holds the fleet's gossip key, made afresh on every run.
const keyringFile = "mesh.keys"

// writeFiles writes the configs, tokens, GeoIP database and gossip keyring.
func writeFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("fleet dir: %w", err)
	}
	if err := demodb.Write(filepath.Join(dir, "city.mmdb")); err != nil {
		return fmt.Errorf("demo GeoIP database: %w", err)
	}
	key := make([]byte, 32) // AES-256
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("gossip key: %w", err)
	}
	files := map[string]string{
		"node.token":      devToken + "\n",
		"agg-tokens.yaml": fmt.Sprintf("%q: %s\n", "*", devToken),
		"agg.yaml":        aggregatorConfig(dir),
		keyringFile:       "# the local fleet's gossip key; see docs/mesh.md for rotation\n" + base64.StdEncoding.EncodeToString(key) + "\n",
	}
	for _, n := range Nodes {
		files[n.ID+".yaml"] = nodeConfig(dir, n)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

// child is a fleet process; done closes when it has exited.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func start(binary, dir, name string, args ...string) (*child, error) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		log.Close()
		close(c.done)
	}()
	return c, nil
}

// stopAll asks every child to drain and exit, and kills any still running
// ten seconds later.
func stopAll(children []*child) {
	for _, c := range children {
		c.cmd.Process.Signal(syscall.SIGTERM)
	}
	timeout := time.After(10 * time.Second)
	for _, c := range children {
		select {
		case <-c.done:
		case <-timeout:
			c.cmd.Process.Kill()
			<-c.done
		}
	}
}

func waitForFile(ctx context.Context, path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for " + path)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func aggregatorConfig(dir string) string {
	return fmt.Sprintf(`listen: %s
data_dir: %s
tokens_file: agg-tokens.yaml
retention: 24h
regions:
  eu-central: {lat: 50.11, lon: 8.68}
  us-east: {lat: 39.04, lon: -77.49}
`, AggregatorAddr, filepath.Join(dir, "agg"))
}

func nodeConfig(dir string, n Node) string {
	join := ""
	if n.Index > 0 {
		join = fmt.Sprintf("\n  join: [%q]", Nodes[0].Gossip())
	}
	return fmt.Sprintf(`node: {id: %s, region: %s, location: {lat: %v, lon: %v}, public_url: "https://%s", capacity: 500}
listen: {https: %q, admin: %q}
access_log: {sample: 0.01}
sample_backends:
  - {listen: %q, name: %s-app, latency: 5ms}
services:
  app: {balancer: ewma, backends: [{url: "http://%s"}], health: {path: /healthz, interval: 1s}}
routes:
  - {name: app, match: {path_prefix: /}, service: app, steer: redirect}
mesh:
  bind: %q%s
  keyring: %s
geo:
  database: %s
  trusted_proxies: ["127.0.0.0/8"]
telemetry:
  aggregator: "https://%s"
  token_file: %s
  spool: {dir: %s, max: 64MiB}
  interval: 5s
  ca_file: %s
`, n.ID, n.Region, n.Lat, n.Lon, n.HTTPS(), n.HTTPS(), n.Admin(), n.Backend(), n.ID, n.Backend(),
		n.Gossip(), join, filepath.Join(dir, keyringFile), filepath.Join(dir, "city.mmdb"), AggregatorAddr, filepath.Join(dir, "node.token"),
		filepath.Join(dir, "spool-"+n.ID), filepath.Join(dir, "agg", "dev-tls", "cert.pem"))
}

func printGuide(w io.Writer, dir string) {
	fmt.Fprintf(w, "A local fleet: an aggregator and %d nodes in two regions (configs and logs in %s)\n", len(Nodes), dir)
	for _, n := range Nodes {
		fmt.Fprintf(w, "  %-6s %-11s https://%s   admin http://%s\n", n.ID, n.Region, n.HTTPS(), n.Admin())
	}
	a, v := Nodes[0], Nodes[2]
	fmt.Fprintf(w, `Try:
  curl -s http://%s/regions                          # merged load per region, and its leader
  curl -s http://%s/members                          # every node: state, coordinates, report age
  curl -sk -i -H 'X-Forwarded-For: 3.80.0.1' https://%s/   # a Virginia client at Frankfurt: 307 to us-east
  curl -s 'http://%s/geo/decide?ip=3.80.0.1'         # why: each candidate's score
  open https://%s/                                   # the fleet dashboard (self-signed certificate)
Stop with Ctrl-C.
`, a.Admin(), v.Admin(), a.HTTPS(), a.Admin(), AggregatorAddr)
}
