package geolitedb_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"perigee/geo/geolitedb"
)

func TestPathUnpacksOnceAndSaysWhatIsMissing(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(geolitedb.EnvVar, filepath.Join(dir, "absent.mmdb.gz"))
	if _, err := geolitedb.Path(); !errors.Is(err, geolitedb.ErrMissing) || !strings.Contains(err.Error(), "npm install") {
		t.Fatalf("missing archive: %v", err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte("not really a database"))
	zw.Close()
	gz := filepath.Join(dir, "City.mmdb.gz")
	if err := os.WriteFile(gz, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(geolitedb.EnvVar, gz)
	path, err := geolitedb.Path()
	if err != nil || path != filepath.Join(dir, "City.mmdb") {
		t.Fatalf("%q %v", path, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "not really a database" {
		t.Fatalf("unpacked %q", b)
	}
	// A second call reuses the unpacked file.
	os.WriteFile(path, []byte("kept"), 0o644)
	if p, err := geolitedb.Path(); err != nil || p != path {
		t.Fatal(p, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "kept" {
		t.Fatal("unpacked again")
	}
	// A broken archive is an error, not a skip.
	os.WriteFile(gz, []byte("junk"), 0o644)
	os.Remove(path)
	if _, err := geolitedb.Path(); err == nil || errors.Is(err, geolitedb.ErrMissing) {
		t.Fatalf("broken archive: %v", err)
	}
	t.Setenv(geolitedb.EnvVar, filepath.Join(dir, "plain.mmdb"))
	if _, err := geolitedb.Path(); !errors.Is(err, geolitedb.ErrMissing) {
		t.Fatalf("missing plain file: %v", err)
	}
}
