package wasm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"perigee/units"
)

func TestEncodeConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keys.txt"), []byte("k1\nk2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in   any
		want string
	}{
		{nil, ""},
		{"x-edge: fra-1", "x-edge: fra-1"},
		{map[string]any{"keys_file": "keys.txt", "header": "x-api-key"}, `{"header":"x-api-key","keys":"k1\nk2\n"}`},
		{map[string]any{"fields": []any{"password", "ssn"}}, `{"fields":["password","ssn"]}`},
		{42, "42"},
	}
	for _, c := range cases {
		got, err := EncodeConfig(c.in, dir)
		if err != nil || string(got) != c.want {
			t.Errorf("EncodeConfig(%v) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := EncodeConfig(map[string]any{"keys_file": "missing.txt"}, dir); err == nil || !strings.Contains(err.Error(), "keys_file") {
		t.Errorf("missing file: %v", err)
	}
}

func TestSpecLimits(t *testing.T) {
	bad := []Spec{
		{Wasm: []byte{0}},
		{Name: "x"},
		{Name: "x", Wasm: []byte{0}, Settings: Settings{Pool: -1}},
		{Name: "x", Wasm: []byte{0}, Settings: Settings{Memory: 10}},
		{Name: "x", Wasm: []byte{0}, Settings: Settings{Timeout: units.Duration(-1)}},
		{Name: "x", Wasm: []byte{0}, Settings: Settings{MaxBuffer: 100}},
		{Name: "x", Wasm: []byte{0}, Settings: Settings{MaxBuffer: 2 << 30}},
	}
	for _, s := range bad {
		if _, err := s.withDefaults(); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	s, err := Spec{Name: "x", Wasm: []byte{0}}.withDefaults()
	if err != nil || s.Pool != DefaultPoolSize || s.Memory != DefaultMemoryLimit || s.Timeout.D() != DefaultTimeout || s.MaxBuffer != DefaultMaxBuffer {
		t.Errorf("defaults: %+v, %v", s, err)
	}
}
