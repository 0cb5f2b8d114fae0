package wasm

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"perigee/files/filestest"
)

// A transform's _file config names what the operator says; one that is no
// regular file, or one of any size, must not hang or exhaust the node at
// validate, start or reload.
func TestConfigFilesThatAreNoFilesOrTooLargeAreRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filestest.FIFO(t, filepath.Join(dir, "fifo"))
	large := filestest.Sparse(t, filepath.Join(dir, "large"), MaxConfigFileBytes+1)
	for path, want := range map[string]string{fifo: "not a regular file", "/dev/zero": "not a regular file", large: "over"} {
		filestest.Refused(t, "EncodeConfig of "+path, func() error {
			_, err := EncodeConfig(map[string]any{"keys_file": path}, dir)
			return err
		}, "keys_file", want)
	}
}

// The compilation cache is the node's own directory; what is found there
// under its names is never waited on, and the key is never read through a
// symlink, which could point at a file whose bytes someone else knows and
// so let them forge seals.
func TestCacheFilesThatAreNoFilesAreRefused(t *testing.T) {
	t.Run("key is a FIFO", func(t *testing.T) {
		dir := t.TempDir()
		filestest.FIFO(t, filepath.Join(dir, keyFile))
		filestest.Refused(t, "NewHost", func() error {
			h, err := NewHost(Options{CacheDir: dir})
			if err == nil {
				h.Close(context.Background())
			}
			return err
		}, "not a regular file")
	})
	t.Run("key is a symlink", func(t *testing.T) {
		dir := t.TempDir()
		known := filepath.Join(t.TempDir(), "known")
		if err := os.WriteFile(known, make([]byte, keySize), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(known, filepath.Join(dir, keyFile)); err != nil {
			t.Fatal(err)
		}
		if h, err := NewHost(Options{CacheDir: dir}); err == nil {
			h.Close(context.Background())
			t.Fatal("NewHost read its key through a symlink")
		}
	})
	t.Run("seal is a FIFO", func(t *testing.T) {
		probe := wat(t, "probe.wat")
		dir := t.TempDir()
		loadAndServe(t, dir, probe)
		entries := cacheEntries(t, dir)
		if len(entries) == 0 {
			t.Fatal("nothing was written to the cache directory")
		}
		for _, e := range entries {
			if err := os.Remove(e + sealSuffix); err != nil {
				t.Fatal(err)
			}
			filestest.FIFO(t, e+sealSuffix)
		}
		var logs string
		filestest.Within(t, "a load over a cache with FIFO seals", func() error { logs = loadAndServe(t, dir, probe); return nil })
		if !strings.Contains(logs, "recompiling") {
			t.Errorf("no log line about the entries; log:\n%s", logs)
		}
	})
}

// A seal is a new file: a dangling symlink planted at its name does not
// have the seal created where it points.
func TestSealIsNotWrittenThroughASymlink(t *testing.T) {
	dir := t.TempDir()
	g, err := openCacheGuard(dir, DefaultCacheMaxBytes, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	entry := filepath.Join(dir, "wazero-test", strings.Repeat("ab", 32))
	if err := os.MkdirAll(filepath.Dir(entry), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(entry, []byte("compiled"), 0o600); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.Symlink(victim, entry+sealSuffix); err != nil {
		t.Fatal(err)
	}
	var module [32]byte
	rand.Read(module[:])
	g.sealNew(module)
	if _, err := os.Lstat(victim); !os.IsNotExist(err) {
		t.Fatalf("the seal was written through the symlink: %v", err)
	}
}
