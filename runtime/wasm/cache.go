package wasm

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"perigee/files"
)

// cacheGuard authenticates the compiled modules wazero keeps in a cache
// directory. wazero trusts those files: one flipped byte makes every later
// compile of the module fail, and a forged length makes it allocate without
// bound. So beside each entry the guard keeps a seal, written by this node
// with a key only it reads, and before each compile it removes every entry
// it cannot vouch for; wazero then compiles again and the guard seals the
// new entry.
//
// A seal names the module the entry was compiled from (the SHA-256 of the
// module's bytes) and the entry's own SHA-256, under an HMAC that also
// binds the entry's file name, so an entry copied under another name fails
// too. Before compiling a module every seal is checked, and the entries
// sealed for that module are hashed in full: those are the ones wazero may
// read next.
//
// The guard also bounds the directory (trim): each compile marks its
// module's entries used, by their seals' modification time, and while the
// directory holds more than max bytes the entries of the modules used
// longest ago are removed. A node that takes new versions of its
// transforms on every deploy would otherwise fill its disk.
type cacheGuard struct {
	dir    string
	key    []byte
	max    int64
	logger *slog.Logger
	// mu serialises compiles, so the entries that appear during one belong
	// to its module.
	mu sync.Mutex
}

// DefaultCacheMaxBytes bounds a compilation cache directory by default:
// room for a few hundred compiled Go guests.
const DefaultCacheMaxBytes = 1 << 30

const (
	keyFile    = "cache.key"
	keySize    = 32
	sealSuffix = ".mac"
	sealSize   = 3 * sha256.Size // module digest, entry digest, HMAC
)

// openCacheGuard reads the node's cache key in dir, creating it on first
// use, readable by the node's user only.
func openCacheGuard(dir string, max int64, logger *slog.Logger) (*cacheGuard, error) {
	path := filepath.Join(dir, keyFile)
	key, err := readKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, keySize)
		rand.Read(key)
		if err = writeNew(path, key); err != nil {
			err = fmt.Errorf("write wasm cache key: %w", err)
		}
	}
	if err != nil {
		return nil, err
	}
	return &cacheGuard{dir: dir, key: key, max: max, logger: logger}, nil
}

func readKey(path string) ([]byte, error) {
	key, err := files.ReadOwn(path, keySize)
	if err != nil {
		var large *files.TooLargeError
		if errors.As(err, &large) {
			return nil, fmt.Errorf("wasm cache key %s: over %d bytes; remove it to make a new one", path, keySize)
		}
		return nil, fmt.Errorf("wasm cache key: %w", err)
	}
	if st, err := os.Lstat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("wasm cache key %s is readable by others (mode %v); make it 0600", path, st.Mode().Perm())
	}
	if len(key) != keySize {
		return nil, fmt.Errorf("wasm cache key %s: %d bytes, want %d; remove it to make a new one", path, len(key), keySize)
	}
	return key, nil
}

// writeNew writes b to a file that must not be there yet: whatever is at
// path, a dangling symlink too, fails the write rather than receiving it.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// compile runs fn, which compiles the module whose bytes hash to module,
// with only vouched-for entries in the cache, and seals what it adds.
func (g *cacheGuard) compile(module [sha256.Size]byte, fn func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.check(module)
	err := fn()
	g.sealNew(module)
	g.trim(module)
	return err
}

// trim marks module's entries used now and, while the directory holds
// more than g.max bytes, removes the entries of the modules used longest
// ago; module's own stay. An entry without a readable seal is left to
// check.
func (g *cacheGuard) trim(module [sha256.Size]byte) {
	type entry struct {
		path string
		size int64
		used time.Time
	}
	var old []entry
	var total int64
	now := time.Now()
	for _, path := range g.entries() {
		seal, err := readSeal(path + sealSuffix)
		info, ierr := os.Stat(path)
		sinfo, serr := os.Stat(path + sealSuffix)
		if err != nil || ierr != nil || serr != nil {
			continue
		}
		size := info.Size() + sinfo.Size()
		total += size
		if bytes.Equal(seal[:sha256.Size], module[:]) {
			if err := os.Chtimes(path+sealSuffix, now, now); err != nil {
				g.logger.Warn("mark wasm cache entry used", "entry", path, "err", err)
			}
			continue
		}
		old = append(old, entry{path, size, sinfo.ModTime()})
	}
	slices.SortFunc(old, func(a, b entry) int { return a.used.Compare(b.used) })
	for _, e := range old {
		if total <= g.max {
			return
		}
		g.logger.Info("wasm compilation cache over its bound; removing the entry used longest ago",
			"entry", e.path, "last_used", e.used, "max_bytes", g.max)
		g.remove(e.path)
		total -= e.size
	}
}

// entries lists wazero's cache files: 64 hex digits, in a directory per
// wazero version.
func (g *cacheGuard) entries() []string {
	paths, _ := filepath.Glob(filepath.Join(g.dir, "wazero-*", strings.Repeat("[0-9a-f]", 2*sha256.Size)))
	return paths
}

// check removes every entry whose seal is missing or wrong, and every
// entry sealed for module whose contents no longer match.
func (g *cacheGuard) check(module [sha256.Size]byte) {
	for _, path := range g.entries() {
		seal, err := readSeal(path + sealSuffix)
		switch {
		case err != nil:
			g.reject(path, fmt.Sprintf("no valid seal: %v", err))
		case !hmac.Equal(seal[2*sha256.Size:], g.mac(path, seal[:2*sha256.Size])):
			g.reject(path, "seal does not match (written elsewhere, or moved)")
		case bytes.Equal(seal[:sha256.Size], module[:]):
			sum, err := fileDigest(path)
			if err != nil {
				g.reject(path, err.Error())
			} else if !bytes.Equal(sum[:], seal[sha256.Size:2*sha256.Size]) {
				g.reject(path, "contents changed since it was written")
			}
		}
	}
}

// sealNew seals the entries that have none: those the compile just wrote.
func (g *cacheGuard) sealNew(module [sha256.Size]byte) {
	for _, path := range g.entries() {
		if _, err := os.Stat(path + sealSuffix); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		sum, err := fileDigest(path)
		if err != nil {
			g.logger.Warn("seal wasm cache entry", "entry", path, "err", err)
			continue
		}
		seal := append(module[:], sum[:]...)
		seal = append(seal, g.mac(path, seal)...)
		if err := writeNew(path+sealSuffix, seal); err != nil {
			g.logger.Warn("seal wasm cache entry", "entry", path, "err", err)
		}
	}
}

func (g *cacheGuard) mac(path string, digests []byte) []byte {
	m := hmac.New(sha256.New, g.key)
	io.WriteString(m, filepath.Base(path))
	m.Write(digests)
	return m.Sum(nil)
}

func (g *cacheGuard) reject(path, why string) {
	g.logger.Warn("wasm compilation cache entry failed its check; removing it and recompiling", "entry", path, "why", why)
	g.remove(path)
}

// remove deletes an entry and its seal.
func (g *cacheGuard) remove(path string) {
	for _, p := range []string{path, path + sealSuffix} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			g.logger.Error("remove wasm cache entry", "entry", p, "err", err)
		}
	}
}

func readSeal(path string) ([]byte, error) {
	seal, err := files.ReadOwn(path, sealSize)
	if err != nil {
		return nil, err
	}
	if len(seal) != sealSize {
		return nil, fmt.Errorf("%d bytes, want %d", len(seal), sealSize)
	}
	return seal, nil
}

func fileDigest(path string) (sum [sha256.Size]byte, err error) {
	f, err := files.OpenOwn(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	h.Sum(sum[:0])
	return sum, nil
}
