package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"perigee/aggregator"
	"perigee/devfleet"
	"perigee/policies/sim"
)

// policyCmd is `perigee policy test POLICY.lua --trace TRACE [--plot out.svg]`.
func policyCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(stdout, "usage: perigee policy test POLICY.lua --trace TRACE [--plot out.svg]")
		return nil
	}
	if len(args) == 0 || args[0] != "test" {
		fmt.Fprintln(stderr, "usage: perigee policy test POLICY.lua --trace TRACE [--plot out.svg]")
		return errUsage
	}
	fs := newFlags("policy test", stderr)
	trace := fs.String("trace", "", "metrics trace to replay (CSV or JSON lines)")
	plot := fs.String("plot", "", "write load against replicas as an SVG to this file")
	minR := fs.Int("min", 1, "minimum replicas of every service")
	maxR := fs.Int("max", 50, "maximum replicas of every service")
	maxStep := fs.Int("max-step", 0, "largest change of replicas per decision (0: any)")
	warmup := fs.Duration("warmup", 5*time.Second, "how long a new replica takes to serve")
	interval := fs.Duration("interval", 0, "time between evaluations (default: the trace's step)")
	allowErrors := fs.Bool("allow-errors", false, "exit 0 despite evaluation errors and rejected decisions")
	policy, err := parseFile(fs, args[1:])
	if err != nil {
		return err
	}
	if policy == "" || *trace == "" {
		fmt.Fprintln(stderr, "usage: perigee policy test POLICY.lua --trace TRACE [--plot out.svg]")
		return errUsage
	}
	return sim.Run(context.Background(), sim.Options{
		Policy: policy, Trace: *trace, Plot: *plot, Min: *minR, Max: *maxR, MaxStep: *maxStep,
		Warmup: *warmup, Interval: *interval, AllowErrors: *allowErrors,
	}, stdout)
}

// aggregate is `perigee aggregate --config agg.yaml`.
func aggregate(args []string, stderr io.Writer) error {
	fs := newFlags("aggregate", stderr)
	path := fs.String("config", "", "aggregator config file")
	logFormat := fs.String("log-format", "auto", "auto, json or text")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *path == "" {
		fmt.Fprintln(stderr, "perigee aggregate: --config is required (see aggregator/agg.example.yaml)")
		return errUsage
	}
	log, sink, err := newLogger(*logFormat, stderr)
	if err != nil {
		return err
	}
	defer closeLog(sink)
	cfg, err := aggregator.LoadConfig(*path)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return aggregator.Run(ctx, cfg, log)
}

// fleet is `perigee fleet`: a local fleet for trying the mesh, the geo
// router and the aggregator on one machine.
func fleet(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet", stderr)
	dir := fs.String("dir", filepath.Join(os.TempDir(), "perigee-fleet"), "where the fleet's configs, data and logs go")
	if err := parse(fs, args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return devfleet.Run(ctx, self, *dir, stdout)
}
