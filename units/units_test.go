package units

import "testing"

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"512": 512, "64KiB": 64 << 10, "16MiB": 16 << 20, "1GiB": 1 << 30, "2GB": 2e9, "10 B": 10} {
		got, err := ParseBytes(in)
		if err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1TiB", "lots", "99999999999GiB"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) accepted", bad)
		}
	}
}
