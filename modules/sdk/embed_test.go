//go:build !wasip1

package sdk

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Every guest-side file of the package is carried, so a transform written
// outside the repository sees the same SDK.
func TestSourceCarriesEveryGuestFile(t *testing.T) {
	all, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range all {
		if f != "embed.go" && !strings.HasSuffix(f, "_test.go") {
			want = append(want, f)
		}
	}
	got, err := fs.Glob(Source, "*.go")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("embedded %v, package has %v: list them in embed.go", got, want)
	}
	for _, f := range got {
		a, _ := fs.ReadFile(Source, f)
		b, _ := os.ReadFile(f)
		if string(a) != string(b) {
			t.Fatalf("%s differs", f)
		}
	}
}
