package edge

import (
	"strings"
	"testing"

	"perigee/edge/config"
)

// A reload that changes what needs a restart names each key at its line,
// not a Go struct.
func TestRefusedReloadNamesFileAndLine(t *testing.T) {
	base := "listen: {https: \"127.0.0.1:8443\"}\nservices:\n  api: {backends: [{url: \"http://127.0.0.1:9001\"}]}\nroutes: [{service: api}]\n"
	old, err := config.Parse("node.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("node.yaml", []byte(strings.Replace(base, "8443", "8444", 1)+"timeouts: {drain: 5s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = needsRestart(cfg, old)
	want := "node.yaml:1: listen changed: that needs a restart\nnode.yaml:5: timeouts changed: that needs a restart"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want\n%s", err, want)
	}
	if err := needsRestart(old, old); err != nil {
		t.Fatal(err)
	}
}
