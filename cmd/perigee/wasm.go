package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"perigee/modules/sdk"
	"perigee/runtime/wasm"
)

const wasmUsage = `usage:
  perigee wasm init DIR               write a new Go transform, with the SDK, into DIR
  perigee wasm build DIR -o out.wasm  build the transform in DIR for wasip1`

// wasmCmd is `perigee wasm init DIR` and `perigee wasm build DIR -o out.wasm`.
func wasmCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(stdout, wasmUsage)
		return nil
	}
	if len(args) == 0 || (args[0] != "build" && args[0] != "init") {
		fmt.Fprintln(stderr, wasmUsage)
		return errUsage
	}
	if args[0] == "init" {
		fs := newFlags("wasm init", stderr)
		dir, err := parseFile(fs, args[1:])
		if err != nil {
			return err
		}
		if dir == "" {
			fmt.Fprintln(stderr, wasmUsage)
			return errUsage
		}
		if err := wasmInit(dir); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote a transform to %s; build it with\n  perigee wasm build %s -o %s.wasm\n", dir, dir, filepath.Base(dir))
		return nil
	}
	fs := newFlags("wasm build", stderr)
	out := fs.String("o", "", "output .wasm file")
	dir, err := parseFile(fs, args[1:])
	if err != nil {
		return err
	}
	if dir == "" || *out == "" {
		fmt.Fprintln(stderr, wasmUsage)
		return errUsage
	}
	if _, err := findGoMod(dir); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "building %s for wasip1 with go build -buildmode=c-shared (a first build compiles Go's runtime for wasm and may take a minute)...\n", dir)
	start := time.Now()
	if err := wasm.Build(context.Background(), dir, *out); err != nil {
		return err
	}
	st, err := os.Stat(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s (%d KiB) in %.1fs\n", *out, st.Size()>>10, time.Since(start).Seconds())
	return nil
}

func isHelp(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" }

// findGoMod is the go.mod that governs dir, or an error that says what to do.
func findGoMod(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		return "", fmt.Errorf("wasm build: %s is not a directory", dir)
	}
	for d := abs; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "go.mod"), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("wasm build: no go.mod in %s or above it: start a transform with `perigee wasm init %s`", dir, dir)
		}
	}
}

// The module a new transform is: its own go.mod, which takes the SDK from
// the copy beside it so that building needs no network.
const (
	initGoMod = `module %s

go 1.24

require perigee/modules/sdk v0.0.0

replace perigee/modules/sdk => ./sdk
`
	sdkGoMod = `module perigee/modules/sdk

go 1.24
`
	initMain = `//go:build wasip1

// Command %[1]s is an http-wasm transform for Perigee. Build it with
//
//	perigee wasm build . -o %[1]s.wasm
//
// and name the .wasm file in a transforms entry of the node's config; the
// entry's config reaches it as sdk.Config().
package main

import "perigee/modules/sdk"

func init() {
	sdk.HandleRequest(func(req sdk.Request, resp sdk.Response) sdk.Action {
		req.Headers().Set("x-transform", "%[1]s")  // to the backend
		resp.Headers().Set("x-transform", "%[1]s") // to the client, with the backend's answer
		return sdk.Continue
	})
}

// main never runs: the host calls the handlers init registered.
func main() {}
`
)

// wasmInit writes a transform into dir, refusing to overwrite one.
func wasmInit(dir string) error {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return -1
	}, strings.ToLower(filepath.Base(dir)))
	if name == "" {
		name = "transform"
	}
	files := map[string]string{
		"go.mod":     fmt.Sprintf(initGoMod, name),
		"main.go":    fmt.Sprintf(initMain, name),
		"sdk/go.mod": sdkGoMod,
	}
	entries, err := fs.ReadDir(sdk.Source, ".")
	if err != nil {
		return err
	}
	for _, e := range entries {
		b, err := fs.ReadFile(sdk.Source, e.Name())
		if err != nil {
			return err
		}
		files[filepath.Join("sdk", e.Name())] = string(b)
	}
	// Nothing of the operator's is overwritten: every file there already
	// is named, and none is written.
	var there []string
	for path := range files {
		path = filepath.Join(dir, path)
		if _, err := os.Lstat(path); err == nil {
			there = append(there, path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("wasm init: %w", err)
		}
	}
	if len(there) > 0 {
		slices.Sort(there)
		if slices.Contains(there, filepath.Join(dir, "go.mod")) {
			return fmt.Errorf("wasm init: %s already has a go.mod (and would overwrite %s)", dir, strings.Join(there, ", "))
		}
		return fmt.Errorf("wasm init: would overwrite %s", strings.Join(there, ", "))
	}
	for path, body := range files {
		path = filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("wasm init: %w", err)
		}
		// O_EXCL: a file that appeared since the check is not overwritten.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("wasm init: %w", err)
		}
		_, err = f.WriteString(body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("wasm init: %w", err)
		}
	}
	return nil
}
