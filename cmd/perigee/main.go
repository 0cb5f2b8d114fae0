// Command perigee is the Perigee edge gateway: one binary for the edge node,
// its tools, and the telemetry aggregator.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `perigee: a WebAssembly-and-Lua edge gateway for geo-distributed PoPs.

Usage:
  perigee serve [--config node.yaml]         run an edge node (no --config: the embedded dev config)
  perigee validate --config node.yaml        check a config and exit
  perigee sample-backend --listen ADDR       run the built-in demo backend
  perigee aggregate --config agg.yaml        run the central telemetry aggregator
  perigee fleet [--dir DIR]                  run a local fleet: an aggregator and four meshed nodes
  perigee policy test POLICY.lua --trace T   replay a metrics trace through a Lua policy
  perigee wasm build DIR -o out.wasm         build a Go transform for wasip1
  perigee version                            print the version

Run "perigee COMMAND -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks errors that are the caller's words, not the world's.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = serve(rest, stdout, stderr)
	case "validate":
		err = validate(rest, stdout, stderr)
	case "sample-backend":
		err = sampleBackend(rest, stderr)
	case "aggregate":
		err = aggregate(rest, stderr)
	case "fleet":
		err = fleet(rest, stdout, stderr)
	case "policy":
		err = policyCmd(rest, stdout, stderr)
	case "wasm":
		err = wasmCmd(rest, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "perigee: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		return 2
	default:
		fmt.Fprintln(stderr, err)
		return 1
	}
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

// parse reads flags and refuses stray arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}

// newLogger logs JSON in production and text on a terminal.
func newLogger(format string, w io.Writer) (*slog.Logger, error) {
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want auto, json or text: %w", format, errUsage)
}
