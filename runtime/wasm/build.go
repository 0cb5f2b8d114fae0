package wasm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build compiles the Go transform in dir to a module at out, with the flags
// an http-wasm guest in standard Go needs: wasip1/wasm, c-shared (a reactor
// whose exports the host calls) and trimmed paths.
func Build(ctx context.Context, dir, out string) error {
	absOut, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("wasm build %s: %w", dir, err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-buildmode=c-shared", "-trimpath", "-o", absOut, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("wasm build %s: %w\n%s", dir, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}
