package units

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

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

func TestDurationAndSizeFromYAML(t *testing.T) {
	var v struct {
		D Duration `yaml:"d"`
		B ByteSize `yaml:"b"`
	}
	if err := yaml.Unmarshal([]byte("d: 250ms\nb: 64KiB\n"), &v); err != nil || v.D.D() != 250*time.Millisecond || v.B != 64<<10 {
		t.Fatalf("got %+v, %v", v, err)
	}
	for in, want := range map[string]string{
		"d: 5 seconds": `line 1: bad duration "5 seconds"`,
		"d: -1s":       `line 1: negative duration "-1s"`,
		"b: lots":      `line 1: bad size "lots"`,
	} {
		if err := yaml.Unmarshal([]byte(in), &v); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", in, err, want)
		}
	}
	if b, _ := json.Marshal(Duration(2 * time.Second)); string(b) != `"2s"` {
		t.Errorf("JSON %s, want \"2s\"", b)
	}
}
