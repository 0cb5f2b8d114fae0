package config

import (
	"os"
	"path/filepath"
	"testing"

	"perigee/files/filestest"
)

// TestFilesThatAreNoFilesAreRefused: a config, admin token or Wasm module
// path naming a FIFO blocked validate, serve and every reload for good.
func TestFilesThatAreNoFilesAreRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filestest.FIFO(t, filepath.Join(dir, "fifo"))
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
		filestest.Refused(t, c.name, c.run, c.want...)
	}
}
