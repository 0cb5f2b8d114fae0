package edge

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"testing"

	"perigee/mesh"
)

// A reload rereads the mesh's keyring file, so keys rotate without a
// restart (docs/mesh.md). Node a holds k1 and b holds k2: b is refused.
// Once a's file names k2 first and a reloads, b's rejoins get in. A damaged
// file refuses the reload and the old config keeps serving.
func TestReloadRotatesTheMeshKeyring(t *testing.T) {
	key := func() string {
		k := make([]byte, 32)
		rand.Read(k)
		return base64.StdEncoding.EncodeToString(k)
	}
	k1, k2 := key(), key()
	dir := t.TempDir()
	keysA, keysB := filepath.Join(dir, "a.keys"), filepath.Join(dir, "b.keys")
	writeFile(t, keysA, k1+"\n")
	writeFile(t, keysB, k2+"\n")
	gossipA := freePort(t)
	a := startNode(t, nodeYAML("round_robin", backend(t, "a"))+
		fmt.Sprintf("node: {id: a, region: r}\nmesh: {bind: %q, keyring: %q}\n", gossipA, keysA))
	b := startNode(t, nodeYAML("round_robin", backend(t, "b"))+
		fmt.Sprintf("node: {id: b, region: r}\nmesh: {bind: %q, join: [%q], keyring: %q}\n", freePort(t), gossipA, keysB))
	sees := func(n *testNode, id string) bool {
		for _, m := range n.fleet.cluster.Members() {
			if m.Meta.ID == id && m.State == mesh.StateAlive {
				return true
			}
		}
		return false
	}
	if sees(a, "b") || sees(b, "a") {
		t.Fatal("nodes with different keys formed a mesh")
	}

	writeFile(t, keysA, k2+"\n"+k1+"\n")
	if err := a.Reload(); err != nil {
		t.Fatalf("reload with k2 in use: %v", err)
	}
	waitFor(t, "b admitted once a uses its key", func() bool { return sees(a, "b") && sees(b, "a") })

	writeFile(t, keysA, "not a key\n")
	if err := a.Reload(); err == nil {
		t.Fatal("a damaged keyring file was accepted on reload")
	}
	if resp, _ := get(t, h1Client(), "https://"+a.Addrs().HTTPS+"/"); resp.StatusCode != 200 {
		t.Fatalf("after a refused reload: %d", resp.StatusCode)
	}
}
