// Command perigee is the Perigee edge gateway: one binary for the edge node,
// its tools, and the telemetry aggregator.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"perigee/logsink"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// command is one subcommand: how it is called, what it does, and its code.
type command struct {
	name, args, summary string
	run                 func(args []string, stdout, stderr io.Writer) error
}

// commands are the subcommands in the order the usage lists them; the
// usage text and the shell completions are made from this table.
var commands []command

func init() {
	commands = []command{
		{"serve", "[--config node.yaml]", "run an edge node (no --config: the embedded dev config)", serve},
		{"proxy", "--from :8443 --to 127.0.0.1:3000", "proxy one address to a backend over HTTP/1.1, HTTP/2 and HTTP/3", proxyCmd},
		{"validate", "--config node.yaml | --aggregator agg.yaml", "check a config as serve (or aggregate) would, and exit", validate},
		{"sample-backend", "--listen ADDR", "run the built-in demo backend", func(a []string, _, e io.Writer) error { return sampleBackend(a, e) }},
		{"aggregate", "--config agg.yaml", "run the central telemetry aggregator", func(a []string, _, e io.Writer) error { return aggregate(a, e) }},
		{"fleet", "[--dir DIR]", "run a local fleet: an aggregator and four meshed nodes", fleet},
		{"policy", "test POLICY.lua --trace T", "replay a metrics trace through a Lua policy", policyCmd},
		{"wasm", "init DIR | build DIR -o out.wasm", "start a Go transform; build one for wasip1", wasmCmd},
		{"completion", "bash|zsh|fish", "print a shell completion script", completion},
		{"version", "", "print the version", func(_ []string, o, _ io.Writer) error { fmt.Fprintln(o, versionString()); return nil }},
	}
}

func usage() string {
	var b strings.Builder
	b.WriteString("perigee: a WebAssembly-and-Lua edge gateway for geo-distributed PoPs.\n\nUsage:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-48s %s\n", strings.TrimSpace("perigee "+c.name+" "+c.args), c.summary)
	}
	b.WriteString("\nFlags may come before or after other arguments.\nRun \"perigee COMMAND -h\" for a command's flags.\n")
	return b.String()
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks errors that are the caller's words, not the world's.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return 2
	}
	var err error
	switch name, rest := args[0], args[1:]; name {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage())
		return 0
	case "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	default:
		c := lookup(name)
		if c == nil {
			fmt.Fprintf(stderr, "perigee: unknown command %q\n\n%s", name, usage())
			return 2
		}
		err = c.run(rest, stdout, stderr)
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintln(stderr, err)
		return 1
	}
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

func versionString() string {
	v := version
	if info, ok := debug.ReadBuildInfo(); ok && v == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v = info.Main.Version
	}
	return fmt.Sprintf("perigee %s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// newFlags makes a flag set whose errors and help go to stderr.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("perigee "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseArgs reads flags wherever they stand among the arguments, as most
// tools do, and returns the other arguments in order; after "--" every
// argument is taken as it is.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			return append(positional, rest...), nil
		}
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// parse reads flags and refuses stray arguments.
func parse(fs *flag.FlagSet, args []string) error {
	_, err := parseN(fs, args, 0)
	return err
}

// parseFile reads flags and the one file argument a command takes, which
// is "" when it is missing.
func parseFile(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseN(fs, args, 1)
	if err != nil || len(pos) == 0 {
		return "", err
	}
	return pos[0], nil
}

// parseN reads flags and at most n other arguments.
func parseN(fs *flag.FlagSet, args []string, n int) ([]string, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) > n {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), pos[n])
		return nil, errUsage
	}
	return pos, nil
}

// logBuffer bounds the process's own log lines waiting for stderr, and
// logFlush how long the way out waits for them.
const (
	logBuffer = 1 << 20
	logFlush  = 2 * time.Second
)

// newLogger logs JSON in production and text on a terminal, through a
// bounded buffer (logsink): a reader of w that stops reading (a full pipe)
// never holds up the code that logs, and one that went away does not end
// the process. closeLog flushes it on the way out.
func newLogger(format string, w io.Writer) (*slog.Logger, *logsink.Sink, error) {
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	opts := &slog.HandlerOptions{ReplaceAttr: readable}
	var handler func(io.Writer) slog.Handler
	switch format {
	case "json":
		handler = func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, opts) }
	case "text":
		handler = func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, opts) }
	default:
		return nil, nil, fmt.Errorf("--log-format %q: want auto, json or text: %w", format, errUsage)
	}
	// Go exits on a broken pipe at stdout or stderr unless SIGPIPE is
	// asked for: a log reader that went away (a crashed shipper) would take
	// the node down. Asked for, the write fails and the sink counts the
	// loss. Notify rather than Ignore, so that children (replicas, sample
	// backends) do not inherit an ignored SIGPIPE; nothing need read it.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	sink := logsink.New(w, logBuffer, logsink.Notice(handler))
	log := slog.New(handler(sink))
	// Libraries that log through the log package, and parts given no
	// logger (slog.Default), go through the sink too: straight to stderr
	// they would block on a reader that stopped.
	slog.SetDefault(log)
	return log, sink, nil
}

// closeLog writes out what the log holds, within logFlush: a stderr nobody
// reads is given up rather than waited for.
func closeLog(sink *logsink.Sink) {
	ctx, cancel := context.WithTimeout(context.Background(), logFlush)
	defer cancel()
	sink.Close(ctx) // nowhere left to report that it could not
}

// readable writes durations as "1.5s" rather than nanoseconds, and errors
// that gather others the way go-multierror does (memberlist's) as their
// parts, without its "1 error occurred:\n\t* " framing.
func readable(_ []string, a slog.Attr) slog.Attr {
	switch v := a.Value.Any().(type) {
	case time.Duration:
		a.Value = slog.StringValue(v.String())
	case interface{ WrappedErrors() []error }:
		parts := make([]string, 0, len(v.WrappedErrors()))
		for _, e := range v.WrappedErrors() {
			parts = append(parts, e.Error())
		}
		a.Value = slog.StringValue(strings.Join(parts, "; "))
	}
	return a
}
