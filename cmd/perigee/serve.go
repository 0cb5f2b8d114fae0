package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"perigee/aggregator"
	"perigee/edge"
	"perigee/edge/config"
	"perigee/edge/samplebackend"
	"perigee/units"
)

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default()
	}
	return config.Load(path)
}

func serve(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	path := fs.String("config", "", "config file (default: the embedded dev config)")
	logFormat := fs.String("log-format", "auto", "auto, json or text")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, sink, err := newLogger(*logFormat, stderr)
	if err != nil {
		return err
	}
	defer closeLog(sink)
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	return runNode(cfg, log, sink.Dropped, stdout, func() (*config.Config, error) { return loadConfig(*path) })
}

// runNode serves cfg until SIGTERM or SIGINT, reloading on SIGHUP with
// load (nil refuses reloads) and reopening the access log file on SIGUSR1,
// and drains on the way out. logDropped counts the lines log dropped.
func runNode(cfg *config.Config, log *slog.Logger, logDropped func() uint64, stdout io.Writer, load func() (*config.Config, error)) error {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := edge.StartSampleBackends(ctx, cfg, log); err != nil {
		return err
	}
	node, err := edge.New(cfg, edge.Options{Log: log, LogDropped: logDropped, Version: version, Load: load})
	if err != nil {
		return err
	}
	if err := node.Start(); err != nil {
		return err
	}
	printWelcome(stdout, cfg, node)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	for sig := range signals {
		switch sig {
		case syscall.SIGHUP:
			_ = node.Reload() // a refused reload is logged; the old config serves on
			continue
		case syscall.SIGUSR1:
			if err := node.ReopenLogs(); err != nil {
				log.Error("reopening the access log; it keeps going to the old file", "err", err)
			}
			continue
		}
		log.Info("shutting down: draining requests in flight", "signal", sig.String(), "deadline", cfg.Timeouts.Drain.D(),
			"stop_at_once", "send "+sig.String()+" again")
		drain, cancel := context.WithTimeout(context.Background(), cfg.Timeouts.Drain.D())
		go cutShortOnSecondSignal(drain, sig, signals, cancel, log)
		err := node.Shutdown(drain)
		cancel()
		if err != nil {
			log.Warn("shutdown did not finish cleanly", "err", err)
		}
		return nil
	}
	return nil
}

// cutShortOnSecondSignal ends the drain, by cancel, when first (SIGTERM
// or SIGINT) comes again (Ctrl-C twice): the operator wants the node gone
// now, and Shutdown then closes what is open and stops the replicas at
// once. The other of the two is not taken for a repeat: a terminal's
// Ctrl-C reaches a whole process group, so a supervisor in it that passes
// the stop on as SIGTERM (perigee fleet does) would cut every drain short.
// A reload or reopen asked for during the drain is dropped.
func cutShortOnSecondSignal(drain context.Context, first os.Signal, signals <-chan os.Signal, cancel context.CancelFunc, log *slog.Logger) {
	for {
		select {
		case <-drain.Done():
			return
		case sig := <-signals:
			switch sig {
			case first:
				log.Warn("second signal: stopping at once, requests still in flight are cut", "signal", sig.String())
				cancel()
				return
			case syscall.SIGTERM, syscall.SIGINT:
				log.Info("draining on: only the signal that began the drain stops it at once", "signal", sig.String(), "began", first.String())
			}
		}
	}
}

func printWelcome(w io.Writer, cfg *config.Config, node *edge.Node) {
	a := node.Addrs()
	src := cfg.Path
	fmt.Fprintf(w, "perigee %s (%s) serving with %s\n", cfg.Node.ID, cfg.Node.Region, src)
	if a.HTTPS != "" {
		fmt.Fprintf(w, "  HTTPS (HTTP/1.1, HTTP/2):  https://%s/\n", a.HTTPS)
		fmt.Fprintf(w, "  HTTP/3 (QUIC, same port):  https://%s/\n", a.HTTPS)
		if cfg.ACME != nil {
			// Obtained in the background: there is no key to hash yet.
			fmt.Fprintf(w, "  certificates (ACME):       %s from %s; state at admin /certificates\n", strings.Join(cfg.ACME.Hosts, ", "), cfg.ACME.CA)
		} else {
			fmt.Fprintf(w, "  certificate SPKI sha256:   %s\n", node.SPKIHash())
		}
	}
	if a.HTTP != "" {
		fmt.Fprintf(w, "  plain HTTP:                http://%s/\n", a.HTTP)
	}
	fmt.Fprintf(w, "  admin:                     http://%s/status  /services  /routes  /metrics\n", a.Admin)
	// The hints trust the generated dev certificate blindly: they are for
	// trying a node out, not for one with a real certificate.
	if a.HTTPS != "" && cfg.TLS.Cert == "" && cfg.ACME == nil {
		host, port, _ := net.SplitHostPort(a.HTTPS)
		fmt.Fprintf(w, "Try (the dev certificate is self-signed):\n  curl -k https://%s/\n", a.HTTPS)
		fmt.Fprintf(w, "  gtlsclient --no-quic-dump --exit-on-first-stream-close %s %s https://%s/   # HTTP/3 (ngtcp2-client)\n", host, port, a.HTTPS)
		fmt.Fprintf(w, "  chromium --origin-to-force-quic-on=%s --ignore-certificate-errors-spki-list=%s https://%s/\n", a.HTTPS, node.SPKIHash(), a.HTTPS)
	}
}

func validate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", stderr)
	path := fs.String("config", "", "config file to check")
	agg := fs.String("aggregator", "", "aggregator config file to check instead, as aggregate would")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *path != "" && *agg != "":
		fmt.Fprintln(stderr, "perigee validate: give one of --config and --aggregator")
		return errUsage
	case *agg != "":
		return validateAggregator(*agg, stdout, stderr)
	case *path == "":
		fmt.Fprintln(stderr, "perigee validate: --config is required")
		return errUsage
	}
	cfg, err := config.Check(context.Background(), *path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%s, %s)\n", cfg.Path, count(len(cfg.Services), "service"), count(len(cfg.Routes), "route"))
	return nil
}

// validateAggregator is `perigee validate --aggregator agg.yaml`: the
// config and the files aggregate reads before it opens its data directory,
// with the warnings aggregate would log at start.
func validateAggregator(path string, stdout, stderr io.Writer) error {
	cfg, err := aggregator.LoadConfig(path)
	if err != nil {
		return err
	}
	tokens, warnings, err := cfg.Check()
	for _, w := range warnings {
		fmt.Fprintf(stderr, "%s: warning: %s\n", path, w)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%s)\n", path, count(tokens, "token"))
	return nil
}

func sampleBackend(args []string, stderr io.Writer) error {
	fs := newFlags("sample-backend", stderr)
	listen := fs.String("listen", "127.0.0.1:9001", "address to listen on")
	name := fs.String("name", "", "name sent in the X-Backend header (default: the listen address)")
	latency := fs.Duration("latency", 0, "latency added to every answer")
	errorRate := fs.Float64("error-rate", 0, "share of requests answered 500 (0..1)")
	size := fs.Int("size", 512, "response body bytes")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *errorRate < 0 || *errorRate > 1 || *size < 0 || *size > samplebackend.MaxSize || *latency < 0 {
		fmt.Fprintf(stderr, "perigee sample-backend: --error-rate must be 0..1, --size 0..%d, --latency non-negative\n", samplebackend.MaxSize)
		return errUsage
	}
	if *name == "" {
		*name = *listen
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return samplebackend.Serve(ctx, *listen, samplebackend.Options{Name: *name, Latency: units.Duration(*latency), ErrorRate: *errorRate, Size: units.ByteSize(*size)})
}

// count writes n things in English: "1 service", "2 services".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
