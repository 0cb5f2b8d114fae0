package geoip_test

import (
	"bytes"
	"context"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"perigee/files/filestest"
	"perigee/geo/demodb"
	"perigee/geo/geoip"
	"perigee/memtest"
)

func writeDemo(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "city.mmdb")
	if err := demodb.Write(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLookupPlacesDemoCities(t *testing.T) {
	db, err := geoip.Open(writeDemo(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range demodb.Cities {
		for _, p := range c.Networks {
			for range 2 { // second round is served from the cache
				loc := db.Lookup(p.Addr().Next())
				if !loc.Known || loc.Country != c.Country || loc.City != c.Name || loc.Lat != c.Lat || loc.Lon != c.Lon {
					t.Errorf("%s: got %+v", p, loc)
				}
			}
		}
	}
	if info := db.Info(); info.Type != "GeoLite2-City" {
		t.Errorf("info = %+v", info)
	}
}

func TestLookupUnknownAndPrivateNeverFail(t *testing.T) {
	db, err := geoip.Open(writeDemo(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"10.1.2.3":     geoip.Private,
		"192.168.0.1":  geoip.Private,
		"127.0.0.1":    geoip.Private,
		"::1":          geoip.Private,
		"fe80::1":      geoip.Private,
		"100.64.1.1":   geoip.Private,
		"203.0.113.9":  geoip.Private,
		"2001:db8::1":  geoip.Private,
		"8.8.8.8":      geoip.NotInDB,
		"2a00:1450::1": geoip.NotInDB,
		demodb.CountryOnly.Addr().Next().String(): geoip.NoLocation,
	}
	for ip, want := range cases {
		loc := db.Lookup(netip.MustParseAddr(ip))
		if loc.Known || loc.Source != want {
			t.Errorf("%s: got %+v, want source %s", ip, loc, want)
		}
	}
	if loc := db.Lookup(netip.Addr{}); loc.Known {
		t.Errorf("zero address located: %+v", loc)
	}
	var none *geoip.DB
	if loc := none.Lookup(demodb.Tokyo.Client()); loc.Known || loc.Source != geoip.NoDatabase {
		t.Errorf("nil db: %+v", loc)
	}
	// IPv4-mapped IPv6 is the same client as its IPv4 form.
	mapped := netip.AddrFrom16(demodb.Tokyo.Client().As16())
	if loc := db.Lookup(mapped); loc.City != "Tokyo" {
		t.Errorf("mapped: %+v", loc)
	}
}

func TestOpenRejectsMissingAndCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := geoip.Open(filepath.Join(dir, "absent.mmdb"), nil); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	junk := filepath.Join(dir, "junk.mmdb")
	os.WriteFile(junk, []byte("this is not a database"), 0o644)
	if _, err := geoip.Open(junk, nil); err == nil || !strings.Contains(err.Error(), "not a MaxMind DB") {
		t.Errorf("junk file: %v", err)
	}
	// Damage the search tree but keep the metadata: opens, fails to verify.
	good, _ := os.ReadFile(writeDemo(t))
	bad := append([]byte(nil), good...)
	for i := 0; i < 600 && i < len(bad); i++ {
		bad[i] = 0xff
	}
	damaged := filepath.Join(dir, "damaged.mmdb")
	os.WriteFile(damaged, bad, 0o644)
	if _, err := geoip.Open(damaged, nil); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("damaged file: %v", err)
	}
	if err := geoip.Check(damaged); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("check of damaged file: %v", err)
	}
	// Cut short: the metadata at the end is gone.
	short := filepath.Join(dir, "short.mmdb")
	os.WriteFile(short, good[:len(good)/2], 0o644)
	if err := geoip.Check(short); err == nil || !strings.Contains(err.Error(), "not a MaxMind DB") {
		t.Errorf("check of truncated file: %v", err)
	}
	if err := geoip.Check(writeDemo(t)); err != nil {
		t.Errorf("check of good file: %v", err)
	}
}

// Open checks what a start can afford (metadata, type, sample lookups) and
// leaves the full walk of every record to Check, which validate runs: a
// record no lookup reaches yet is damaged here, and only Check notices.
func TestOpenLeavesFullVerificationToCheck(t *testing.T) {
	good, _ := os.ReadFile(writeDemo(t))
	// The data section sits between the search tree and the metadata; damage
	// the name in Sydney's record, which no probe reaches.
	at := bytes.LastIndex(good, []byte("Sydney"))
	if at < 0 {
		t.Fatal("demo database has no Sydney record")
	}
	bad := append([]byte(nil), good...)
	bad[at-1] = 0xff // the string's control byte
	path := filepath.Join(t.TempDir(), "city.mmdb")
	os.WriteFile(path, bad, 0o644)
	if _, err := geoip.Open(path, nil); err != nil {
		t.Fatalf("open ran the full verification: %v", err)
	}
	if err := geoip.Check(path); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("check missed the damaged record: %v", err)
	}
}

func TestReloadKeepsOldDatabaseOnBadFile(t *testing.T) {
	path := writeDemo(t)
	db, err := geoip.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokyo := demodb.Tokyo.Client()
	if changed, err := db.Reload(); changed || err != nil {
		t.Fatalf("unchanged file: changed=%v err=%v", changed, err)
	}
	os.WriteFile(path, []byte("truncated garbage"), 0o644)
	if changed, err := db.Reload(); changed || err == nil || !strings.Contains(err.Error(), "keeping the previous") {
		t.Fatalf("bad file: changed=%v err=%v", changed, err)
	}
	if loc := db.Lookup(tokyo); loc.City != "Tokyo" {
		t.Fatalf("old database not kept: %+v", loc)
	}
	if err := demodb.Write(path); err != nil {
		t.Fatal(err)
	}
	if changed, err := db.Reload(); !changed || err != nil {
		t.Fatalf("good file: changed=%v err=%v", changed, err)
	}
	if loc := db.Lookup(tokyo); loc.City != "Tokyo" {
		t.Fatalf("after reload: %+v", loc)
	}
	os.Remove(path)
	if _, err := db.Reload(); err == nil {
		t.Fatal("removed file reloaded without error")
	}
	if loc := db.Lookup(tokyo); loc.City != "Tokyo" {
		t.Fatalf("old database not kept after removal: %+v", loc)
	}
}

// Watch polls every few seconds, and a file it refused stays refused until
// it changes: reading it again on every poll (a download cut off at
// hundreds of MiB, a wrong file the operator has yet to notice) cost its
// size in memory and its read each time, for nothing.
func TestReloadDoesNotReadARefusedFileAgain(t *testing.T) {
	path := writeDemo(t)
	db, err := geoip.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	const size = 32 << 20
	bad := filestest.Sparse(t, filepath.Join(t.TempDir(), "partial.mmdb"), size)
	if err := os.Rename(bad, path); err != nil {
		t.Fatal(err)
	}
	_, first := db.Reload()
	if first == nil {
		t.Fatal("a file of zeros reloaded")
	}
	var again error
	grew := memtest.PeakGrowthDuring(func() { _, again = db.Reload() })
	t.Logf("heap grew %d KiB on the second reload of a refused %d MiB file", grew>>10, size>>20)
	if again == nil || again.Error() != first.Error() {
		t.Errorf("second reload: %v, want the first one's error again: %v", again, first)
	}
	if grew > size/8 {
		t.Errorf("the unchanged refused file was read again: the heap grew by %d MiB", grew>>20)
	}
	if loc := db.Lookup(demodb.Tokyo.Client()); loc.City != "Tokyo" {
		t.Fatalf("old database not kept: %+v", loc)
	}
	// A fixed file is loaded at the next poll.
	if err := demodb.Write(path); err != nil {
		t.Fatal(err)
	}
	if changed, err := db.Reload(); !changed || err != nil {
		t.Fatalf("good file after a refused one: changed=%v err=%v", changed, err)
	}
}

func TestWatchPicksUpNewFile(t *testing.T) {
	path := writeDemo(t)
	db, err := geoip.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go db.Watch(ctx, 10*time.Millisecond)
	if err := demodb.Write(path); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !db.Info().ModTime.Equal(future) {
		if time.Now().After(deadline) {
			t.Fatalf("file change never picked up: %+v", db.Info())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if loc := db.Lookup(demodb.Tokyo.Client()); loc.City != "Tokyo" {
		t.Errorf("after watch reload: %+v", loc)
	}
}

func TestOpenTakesIPv4OnlyDatabases(t *testing.T) {
	path := writeV4(t, map[string]mmdbtype.Map{
		"81.2.69.0/24": {"location": mmdbtype.Map{"latitude": mmdbtype.Float64(51.5), "longitude": mmdbtype.Float64(-0.13)}},
	})
	db, err := geoip.Open(path, nil)
	if err != nil {
		t.Fatalf("IPv4-only database refused: %v", err)
	}
	if loc := db.Lookup(netip.MustParseAddr("81.2.69.1")); !loc.Known {
		t.Errorf("%+v", loc)
	}
	if loc := db.Lookup(netip.MustParseAddr("2a00:1450::1")); loc.Known {
		t.Errorf("IPv6 placed by an IPv4 database: %+v", loc)
	}
}

// A record's coordinates come from the file: a damaged or crafted one may
// hold NaN, infinities or a latitude of 500. Such a record places nobody;
// it is a record without a location, not a point nowhere on Earth (NaN
// also cannot be written as JSON, so /geo/decide would answer 200 with
// no body).
func TestNonsenseCoordinatesPlaceNobody(t *testing.T) {
	records := map[string][2]float64{
		"81.2.69.0/24":  {math.NaN(), -0.13},
		"85.214.0.0/16": {500, 8.68},
		"1.0.16.0/20":   {35.7, math.Inf(1)},
		"177.10.0.0/16": {-23.5, -400},
		"102.65.0.0/16": {-26.2, 28.0}, // a good one beside them
	}
	recs := map[string]mmdbtype.Map{}
	for cidr, ll := range records {
		recs[cidr] = mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String("ZZ")},
			"location": mmdbtype.Map{"latitude": mmdbtype.Float64(ll[0]), "longitude": mmdbtype.Float64(ll[1])}}
	}
	path := writeV4(t, recs)
	db, err := geoip.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for cidr := range records {
		loc := db.Lookup(netip.MustParsePrefix(cidr).Addr().Next())
		if cidr == "102.65.0.0/16" {
			if !loc.Known {
				t.Errorf("%s: the good record is not placed: %+v", cidr, loc)
			}
			continue
		}
		if loc.Known || loc.Source != geoip.NoLocation || loc.Country != "ZZ" {
			t.Errorf("%s: %+v; want a record without a location", cidr, loc)
		}
	}
}

// The database path may name something that is not a file: a FIFO (which
// blocks the read until someone writes) or a device such as /dev/zero
// (which never ends). Open, Check and every reload read it whole, so such
// a path must be refused at once, not hang the start or grow the heap
// until the node is killed.
func TestOpenRefusesWhatIsNotAFile(t *testing.T) {
	for _, path := range []string{filestest.FIFO(t, filepath.Join(t.TempDir(), "city.mmdb")), "/dev/zero"} {
		filestest.Refused(t, "Open of "+path, func() error { _, err := geoip.Open(path, nil); return err }, "not a regular file")
		if err := geoip.Check(path); err == nil {
			t.Errorf("Check(%s) accepted it", path)
		}
	}
}

// writeV4 writes an IPv4 City-type database holding records, by network.
func writeV4(t *testing.T, records map[string]mmdbtype.Map) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-City", IPVersion: 4, RecordSize: 24})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, rec := range records {
		_, network, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Insert(network, rec); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "crafted.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// A record's country code went into a request header as written: a
// crafted one with CR and LF (the library allows 16 bytes) made every
// request from its networks one the proxy refuses to send on. Only an ISO
// 3166-1 alpha-2 code is a country.
func TestCraftedCountryCodeIsNotKept(t *testing.T) {
	codes := map[string]string{"9.0.0.0/8": "U\r\nSet-Cookie:a", "11.0.0.0/8": "USA", "12.0.0.0/8": "U ", "13.0.0.0/8": "DE"}
	records := map[string]mmdbtype.Map{}
	for cidr, code := range codes {
		records[cidr] = mmdbtype.Map{
			"country":  mmdbtype.Map{"iso_code": mmdbtype.String(code)},
			"location": mmdbtype.Map{"latitude": mmdbtype.Float64(37.75), "longitude": mmdbtype.Float64(-97.82)},
		}
	}
	db, err := geoip.Open(writeV4(t, records), nil)
	if err != nil {
		t.Fatal(err)
	}
	for cidr, code := range codes {
		want := ""
		if code == "DE" {
			want = code
		}
		if loc := db.Lookup(netip.MustParsePrefix(cidr).Addr().Next()); !loc.Known || loc.Country != want {
			t.Errorf("%s with iso_code %q: %+v; want placed, country %q", cidr, code, loc, want)
		}
	}
}
