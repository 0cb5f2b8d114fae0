package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFilesThatAreNoFilesAreRefused: a config, admin token or Wasm module
// path naming a FIFO blocked validate, serve and every reload for good.
func TestFilesThatAreNoFilesAreRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(cfg, []byte(`listen: {https: "127.0.0.1:0", admin: "127.0.0.1:0"}
admin: {token_file: "`+fifo+`"}
transforms:
  t: {module: "`+fifo+`"}
services:
  api: {backends: [{url: "http://127.0.0.1:1"}]}
routes:
  - {match: {path_prefix: /}, service: api, transforms: [t]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		run  func() error
		want []string
	}{
		{"Load of a FIFO", func() error { _, err := Load(fifo); return err }, []string{"not a regular file"}},
		{"Check of a FIFO", func() error { _, err := Check(t.Context(), fifo); return err }, []string{"not a regular file"}},
		{"Check of a config naming FIFOs", func() error { _, err := Check(t.Context(), cfg); return err }, []string{"token_file", "module", "not a regular file"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- c.run() }()
			select {
			case err := <-done:
				for _, w := range c.want {
					if err == nil || !strings.Contains(err.Error(), w) {
						t.Fatalf("err = %v, want it to say %q", err, w)
					}
				}
			case <-time.After(10 * time.Second):
				t.Fatal("still reading after 10s")
			}
		})
	}
}
