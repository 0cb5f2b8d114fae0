package wasm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"perigee/logtest"
)

// A cache entry that was damaged on disk (one flipped byte, or cut short)
// is detected: the module is compiled again, a line in the log says so and
// the transform serves.
func TestDamagedCacheEntryRecompiles(t *testing.T) {
	probe := wat(t, "probe.wat")
	for name, damage := range map[string]func(t *testing.T, path string){
		"flipped byte": func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0x40
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"truncated": func(t *testing.T, path string) {
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, st.Size()/2); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			loadAndServe(t, dir, probe)
			entries := cacheEntries(t, dir)
			if len(entries) == 0 {
				t.Fatal("nothing was written to the cache directory")
			}
			for _, e := range entries {
				damage(t, e)
			}
			logs := loadAndServe(t, dir, probe)
			if !strings.Contains(logs, "recompiling") {
				t.Errorf("no log line about the damaged entry; log:\n%s", logs)
			}
			// The entry written by the recompile is sound again.
			if logs := loadAndServe(t, dir, probe); strings.Contains(logs, "recompiling") {
				t.Errorf("entry still rejected after the recompile; log:\n%s", logs)
			}
		})
	}
}

// An entry put there by hand, one that the node did not write, is never
// handed to wazero.
func TestForeignCacheEntryIgnored(t *testing.T) {
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
		// A function count of 2^32-1 where wazero reads it: unchecked, it
		// allocates without bound.
		b, err := os.ReadFile(e)
		if err != nil {
			t.Fatal(err)
		}
		copy(b[len(b)-16:], bytes.Repeat([]byte{0xff}, 16))
		if err := os.WriteFile(e, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if logs := loadAndServe(t, dir, probe); !strings.Contains(logs, "recompiling") {
		t.Errorf("no log line about the foreign entry; log:\n%s", logs)
	}
}

// loadAndServe starts a host on the cache in dir, as a node would, loads
// the probe, checks it serves a request, and returns the host's log.
func loadAndServe(t *testing.T, dir string, wasm []byte) string {
	t.Helper()
	var logs logtest.Buffer
	h, err := NewHost(Options{CacheDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	tr, err := h.Load(context.Background(), Spec{Name: "p", Wasm: wasm, Settings: Settings{Pool: 1}})
	if err != nil {
		t.Fatalf("load on cache %s: %v\nlog:\n%s", dir, err, logs.String())
	}
	defer tr.Release()
	url := serve(t, NewChain(tr).Then(echoBackend))
	if resp, body := get(t, url+"/pass"); resp.StatusCode != 200 || body != "backend" {
		t.Fatalf("got %d %q, want 200 backend", resp.StatusCode, body)
	}
	return logs.String()
}

// cacheEntries lists the compiled modules wazero keeps under dir.
func cacheEntries(t *testing.T, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "wazero-*", strings.Repeat("?", 64)))
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// A sealed entry put in another entry's place, seal and all, fails its
// check: the seal binds the file name.
func TestSwappedCacheEntriesRejected(t *testing.T) {
	probe := wat(t, "probe.wat")
	other := wat(t, `(module (memory (export "memory") 1)
		(func (export "handle_request") (result i64) (i64.const 1))
		(func (export "handle_response") (param i32 i32)))`)
	dir := t.TempDir()
	loadAndServe(t, dir, probe)
	before := cacheEntries(t, dir)
	loadAndServe(t, dir, other)
	var probeEntry, otherEntry string
	for _, e := range cacheEntries(t, dir) {
		if slices.Contains(before, e) {
			probeEntry = e
		} else {
			otherEntry = e
		}
	}
	if probeEntry == "" || otherEntry == "" {
		t.Fatalf("entries %v, want one per module", cacheEntries(t, dir))
	}
	for _, suffix := range []string{"", sealSuffix} {
		if err := os.Rename(otherEntry+suffix, probeEntry+suffix); err != nil {
			t.Fatal(err)
		}
	}
	if logs := loadAndServe(t, dir, probe); !strings.Contains(logs, "seal does not match") {
		t.Errorf("no log line about the moved entry; log:\n%s", logs)
	}
}

// The key is made readable by the node's user only, and a key others can
// read is refused.
func TestCacheKeyPermissions(t *testing.T) {
	dir := t.TempDir()
	h, err := NewHost(Options{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	h.Close(context.Background())
	key := filepath.Join(dir, keyFile)
	st, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Size() != keySize {
		t.Fatalf("key %v, %d bytes; want 0600, %d bytes", st.Mode(), st.Size(), keySize)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewHost(Options{CacheDir: dir}); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Errorf("NewHost with a world-readable key: %v", err)
	}
}

// The cache directory stays under its bound: past it, the entries of the
// modules used longest ago go, never the one just loaded, and a module
// loaded again counts as used again. A node that takes a new version of
// its transforms on every deploy would otherwise fill its disk.
func TestCacheKeepsTheRecentlyUsedUnderItsBound(t *testing.T) {
	a, b, c := wat(t, stampGuest("")), wat(t, stampGuest("(drop (local.get 0))")), wat(t, stampGuest("(drop (local.get 1))"))
	dir := t.TempDir()
	var max int64 // 2.5 entries, once one is measured
	load := func(guest []byte) {
		t.Helper()
		h, err := NewHost(Options{CacheDir: dir, CacheMaxBytes: max})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close(context.Background())
		tr, err := h.Load(context.Background(), Spec{Name: "g", Wasm: guest, Settings: Settings{Pool: 1}})
		if err != nil {
			t.Fatal(err)
		}
		tr.Release()
	}
	cached := func() (modules [][sha256.Size]byte, bytes int64) {
		t.Helper()
		for _, e := range cacheEntries(t, dir) {
			seal, err := readSeal(e + sealSuffix)
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(e)
			if err != nil {
				t.Fatal(err)
			}
			modules = append(modules, [sha256.Size]byte(seal[:sha256.Size]))
			bytes += st.Size() + sealSize
		}
		return modules, bytes
	}
	// The seals name the module as compiled (metered), so each module's
	// digest is the one its first load added.
	added := func(before [][sha256.Size]byte) [sha256.Size]byte {
		t.Helper()
		after, _ := cached()
		for _, m := range after {
			if !slices.Contains(before, m) {
				return m
			}
		}
		t.Fatal("the load added no cache entry")
		return [sha256.Size]byte{}
	}
	load(a)
	da := added(nil)
	_, one := cached()
	max = one * 5 / 2
	before, _ := cached()
	load(b)
	db := added(before)
	time.Sleep(20 * time.Millisecond) // file times tell the loads apart
	load(a)
	time.Sleep(20 * time.Millisecond)
	before, _ = cached()
	load(c)
	dc := added(before)
	modules, total := cached()
	if total > max {
		t.Errorf("cache holds %d bytes, bound %d", total, max)
	}
	has := func(m [sha256.Size]byte) bool { return slices.Contains(modules, m) }
	if !has(da) || !has(dc) || has(db) {
		t.Errorf("cache holds a %v, b %v, c %v; want a (used again) and c (just loaded), not b", has(da), has(db), has(dc))
	}
}
