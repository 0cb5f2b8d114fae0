package devfleet

import (
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"

	"perigee/mesh"
)

// The local fleet's gossip is keyed: every node names the same keyring,
// the file holds a valid key, and each mesh section passes mesh's checks.
func TestFleetGossipIsKeyed(t *testing.T) {
	dir := t.TempDir()
	if err := writeFiles(dir); err != nil {
		t.Fatal(err)
	}
	var keyring string
	for _, n := range Nodes {
		b, err := os.ReadFile(filepath.Join(dir, n.ID+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Mesh mesh.Config `yaml:"mesh"`
		}
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			t.Fatalf("%s: %v", n.ID, err)
		}
		if cfg.Mesh.KeyringFile == "" {
			t.Fatalf("%s: mesh has no keyring", n.ID)
		}
		if keyring != "" && cfg.Mesh.KeyringFile != keyring {
			t.Errorf("%s uses keyring %s, others %s", n.ID, cfg.Mesh.KeyringFile, keyring)
		}
		keyring = cfg.Mesh.KeyringFile
		if err := cfg.Mesh.Validate(); err != nil {
			t.Errorf("%s: %v", n.ID, err)
		}
	}
	keys, err := mesh.ParseKeyring(keyring)
	if err != nil || len(keys) != 1 || len(keys[0]) != 32 {
		t.Fatalf("keyring %s: %d keys, %v; want one 32-byte key", keyring, len(keys), err)
	}
	if st, err := os.Stat(keyring); err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Errorf("keyring mode %v, %v; want readable by its owner only", st.Mode(), err)
	}
	other := t.TempDir()
	if err := writeFiles(other); err != nil {
		t.Fatal(err)
	}
	again, _ := mesh.ParseKeyring(filepath.Join(other, keyringFile))
	if string(again[0]) == string(keys[0]) {
		t.Error("two fleets got the same key: it must be generated, not built in")
	}
}
