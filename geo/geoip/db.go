// Package geoip places client addresses on the map from a GeoIP2 or GeoLite2
// database, caches the answers per client network and swaps in a new database
// when the file changes, keeping the old one when the new file is bad.
package geoip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oschwald/geoip2-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2"

	"perigee/files"
	"perigee/geo/internal/clientnet"
	"perigee/geo/internal/shardcache"
)

// Why a location is or is not known.
const (
	FoundInDB  = "database"
	Private    = "private"     // private, loopback, link-local, shared or documentation space
	NotInDB    = "not-in-db"   // the database has no record for the address
	NoLocation = "no-coords"   // a record without coordinates (a Country database, or a country-level entry)
	NoDatabase = "no-database" // no database configured
)

// Location is where an address is, as far as the database knows.
type Location struct {
	Known  bool    `json:"known"`
	Source string  `json:"source"`
	Lat    float64 `json:"lat,omitempty"`
	Lon    float64 `json:"lon,omitempty"`
	// AccuracyKm is the database's radius around the point within which
	// the client is likely (67%) to be; a country-centre record has a
	// radius of hundreds of kilometres. 0 when the database gives none.
	AccuracyKm int    `json:"accuracy_km,omitempty"`
	Country    string `json:"country,omitempty"`
	City       string `json:"city,omitempty"`
}

// cacheEntries bounds the lookup cache; one entry per client network.
const cacheEntries = 1 << 16

// DB is a reloadable GeoIP database. A nil *DB answers every lookup with an
// unknown location, so a node without a database still routes (to itself).
type DB struct {
	path    string
	log     *slog.Logger
	mu      sync.Mutex // serialises reloads and guards refused
	cur     atomic.Pointer[generation]
	refused *refusal // the last file a reload read and refused
}

// refusal is a file that was read and refused, known by the size and
// modification time a reload compares: it is not read again until they
// change.
type refusal struct {
	size    int64
	modTime time.Time
	err     error
}

// generation is one loaded file with its own cache, so a reload can never
// mix cached answers of the old file with lookups in the new one.
type generation struct {
	reader  *geoip2.Reader
	dbType  string
	built   time.Time
	modTime time.Time
	size    int64
	cache   *shardcache.Cache[netip.Prefix, Location]
}

// Open loads the database at path and checks what a start can afford: the
// metadata, the database type, and lookups of a few addresses across the
// search tree. The walk over every record (Check) takes seconds of CPU on a
// full GeoLite2-City file, so it is left to `perigee validate`; a record
// damaged past what the probes reach only fails the lookups that land on it
// (they come back not-in-db).
func Open(path string, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.Default()
	}
	g, _, err := load(path)
	if err != nil {
		return nil, err
	}
	db := &DB{path: path, log: log}
	db.cur.Store(g)
	return db, nil
}

// Check loads the database at path as Open does and then verifies its whole
// search tree and data section, so a truncated or damaged file is caught
// before a node serves it. `perigee validate` runs it.
func Check(path string) error {
	_, raw, err := load(path)
	if err != nil {
		return err
	}
	if err := raw.Verify(); err != nil {
		return fmt.Errorf("geoip database %s: corrupt: %w", path, err)
	}
	return nil
}

// probes are looked up on every load: public addresses spread over the
// IPv4 and IPv6 halves of the tree, so a file damaged near its root fails
// at once.
var probes = []netip.Addr{
	netip.MustParseAddr("1.1.1.1"),
	netip.MustParseAddr("8.8.8.8"),
	netip.MustParseAddr("81.2.69.160"),
	netip.MustParseAddr("133.11.0.1"),
	netip.MustParseAddr("200.1.1.1"),
	netip.MustParseAddr("2001:4860:4860::8888"),
	netip.MustParseAddr("2a00:1450:4001::1"),
}

// maxDatabase bounds a database file, which load holds in memory whole:
// MaxMind's largest (GeoIP2 City, Enterprise) are some hundreds of MiB.
const maxDatabase = 2 << 30

// load reads the whole file rather than mapping it: a database rewritten in
// place under a memory map faults the process, and a copy lets an old
// generation live on safely until its last lookup is done.
func load(path string) (*generation, *maxminddb.Reader, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("geoip database: %w", err)
	}
	b, err := files.Read(path, maxDatabase)
	if err != nil {
		return nil, nil, fmt.Errorf("geoip database: %w", err)
	}
	return decode(path, b, st)
}

// decode checks and opens a database file's bytes. st is what a reload
// compares, taken before the read: a file replaced while it was read then
// looks changed at the next poll and is read again, rather than passing
// for the one that was read.
func decode(path string, b []byte, st os.FileInfo) (*generation, *maxminddb.Reader, error) {
	raw, err := maxminddb.OpenBytes(b)
	if err != nil {
		return nil, nil, fmt.Errorf("geoip database %s: not a MaxMind DB file: %w", path, err)
	}
	r, err := geoip2.OpenBytes(b)
	if err != nil {
		return nil, nil, fmt.Errorf("geoip database %s: %w", path, err)
	}
	if _, err := r.City(netip.IPv4Unspecified()); err != nil {
		var wrong geoip2.InvalidMethodError
		if errors.As(err, &wrong) {
			return nil, nil, fmt.Errorf("geoip database %s: type %q has no locations; use a City or Country database", path, r.Metadata().DatabaseType)
		}
	}
	for _, a := range probes {
		if a.Is6() && r.Metadata().IPVersion == 4 {
			continue // an IPv4-only tree has no IPv6 half to probe
		}
		if _, err := r.City(a); err != nil {
			return nil, nil, fmt.Errorf("geoip database %s: corrupt: looking up %s: %w", path, a, err)
		}
	}
	md := r.Metadata()
	return &generation{
		reader:  r,
		dbType:  md.DatabaseType,
		built:   md.BuildTime(),
		modTime: st.ModTime(),
		size:    st.Size(),
		cache:   shardcache.New[netip.Prefix, Location](cacheEntries),
	}, raw, nil
}

// Info describes the database being served.
type Info struct {
	Path    string    `json:"path"`
	Type    string    `json:"type"`
	Built   time.Time `json:"built"`
	ModTime time.Time `json:"mod_time"` // of the file as loaded
}

// Info describes the loaded database.
func (db *DB) Info() Info {
	if db == nil {
		return Info{}
	}
	g := db.cur.Load()
	return Info{Path: db.path, Type: g.dbType, Built: g.built, ModTime: g.modTime}
}

// Reload loads the file again if its size or modification time changed. On
// any failure the current database keeps serving and the error is returned.
// A file that was read and refused is not read again until it changes; its
// error is returned again.
func (db *DB) Reload() (changed bool, err error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	old := db.cur.Load()
	st, err := os.Stat(db.path)
	if err != nil {
		return false, fmt.Errorf("geoip reload: %w", err)
	}
	if st.Size() == old.size && st.ModTime().Equal(old.modTime) {
		return false, nil
	}
	if r := db.refused; r != nil && st.Size() == r.size && st.ModTime().Equal(r.modTime) {
		return false, r.err
	}
	keeping := func(err error) error {
		return fmt.Errorf("geoip reload (keeping the previous database): %w", err)
	}
	// A file that could not be read (permissions, say) may become readable
	// without changing: it is tried again at the next poll.
	b, err := files.Read(db.path, maxDatabase)
	if err != nil {
		return false, keeping(fmt.Errorf("geoip database: %w", err))
	}
	g, _, err := decode(db.path, b, st)
	if err != nil {
		db.refused = &refusal{size: st.Size(), modTime: st.ModTime(), err: keeping(err)}
		return false, db.refused.err
	}
	db.cur.Store(g)
	db.refused = nil
	return true, nil
}

// Watch reloads the database whenever the file changes, checking every
// interval until ctx ends.
func (db *DB) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := db.Reload()
		switch {
		case err != nil:
			// A file being copied into place fails until complete; say so once.
			if err.Error() != lastErr {
				db.log.Warn("geoip reload failed", "path", db.path, "err", err)
			}
			lastErr = err.Error()
		case changed:
			lastErr = ""
			db.log.Info("geoip database reloaded", "path", db.path, "type", db.Info().Type)
		}
	}
}

// Lookup locates addr. It never fails: private, reserved and unknown
// addresses come back with Known false and the reason in Source.
func (db *DB) Lookup(addr netip.Addr) Location {
	addr = addr.Unmap()
	if db == nil {
		return Location{Source: NoDatabase}
	}
	if !addr.IsValid() || isPrivate(addr) {
		return Location{Source: Private}
	}
	g := db.cur.Load()
	key := clientnet.Of(addr)
	if loc, ok := g.cache.Get(key); ok {
		return loc
	}
	loc := g.lookup(addr)
	g.cache.Put(key, loc)
	return loc
}

// LatLon is Lookup reduced to coordinates, the shape the RTT learner needs.
func (db *DB) LatLon(addr netip.Addr) (lat, lon float64, ok bool) {
	loc := db.Lookup(addr)
	return loc.Lat, loc.Lon, loc.Known
}

func (g *generation) lookup(addr netip.Addr) Location {
	rec, err := g.reader.City(addr)
	if err != nil || rec == nil || !rec.HasData() {
		return Location{Source: NotInDB}
	}
	loc := Location{Source: NoLocation, Country: isoCountry(rec.Country.ISOCode), City: rec.City.Names.English}
	if lat, lon := rec.Location.Latitude, rec.Location.Longitude; lat != nil && lon != nil && OnEarth(*lat, *lon) {
		loc.Known, loc.Source = true, FoundInDB
		loc.Lat, loc.Lon = *lat, *lon
		loc.AccuracyKm = int(rec.Location.AccuracyRadius)
	}
	return loc
}

// isoCountry is code if it is an ISO 3166-1 alpha-2 code, else "": the
// node puts it in a request header, and a crafted file's code (up to 16
// bytes, CR and LF included) would make the request one no proxy sends.
func isoCountry(code string) string {
	letter := func(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }
	if len(code) != 2 || !letter(code[0]) || !letter(code[1]) {
		return ""
	}
	return code
}

// OnEarth says whether coordinates (a damaged or crafted record's, or a
// config's) are a latitude and longitude at all; written so that NaN fails.
func OnEarth(lat, lon float64) bool {
	return lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180
}

// special holds ranges that are routable in form but never a real client's
// public location.
var special = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("64:ff9b::/96"),
}

func isPrivate(a netip.Addr) bool {
	if !a.IsGlobalUnicast() || a.IsPrivate() {
		return true
	}
	for _, p := range special {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
