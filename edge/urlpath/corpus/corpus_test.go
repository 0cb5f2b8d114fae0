package corpus

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The shipped corpora parse whole: a line that did not would drop a case
// from every test that runs them.
func TestShippedCorporaParse(t *testing.T) {
	paths, err := Paths("../testdata/corpus.txt")
	if err != nil || len(paths) < 100 {
		t.Fatalf("corpus.txt: %d cases, %v", len(paths), err)
	}
	smuggles, err := Smuggling("../testdata/smuggling.txt")
	if err != nil || len(smuggles) < 50 {
		t.Fatalf("smuggling.txt: %d cases, %v", len(smuggles), err)
	}
}

// A line is read into its fields, and a bad one is named by file and line.
func TestLinesAndErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "s.txt")
	os.WriteFile(file, []byte("# head\n\n"+
		`"POST / HTTP/1.1\r\n\r\nab" 200,200  POST / "ab"  GET /smuggled ""  # two`+"\n"+
		`"GET / HTTP/1.1\r\n\r\n" 400`+"\n"+
		`"GET / HTTP/1.1\r\n\r\n" 2x0`+"\n"), 0o644)
	_, err := Smuggling(file)
	if err == nil || !strings.Contains(err.Error(), "s.txt:5:") {
		t.Fatalf("a bad status: %v, want s.txt:5", err)
	}
	os.WriteFile(file, []byte(`"POST / HTTP/1.1\r\n\r\nab" 200,200  POST / "ab"  GET /smuggled ""  # two`+"\n"), 0o644)
	cases, err := Smuggling(file)
	if err != nil || len(cases) != 1 {
		t.Fatalf("%v, %v", cases, err)
	}
	c := cases[0]
	if c.Line != 1 || c.Raw != "POST / HTTP/1.1\r\n\r\nab" || !slices.Equal(c.Statuses, []int{200, 200}) ||
		!slices.Equal(c.Seen, []string{`POST / "ab"`, `GET /smuggled ""`}) {
		t.Errorf("read %+v", c)
	}
	os.WriteFile(file, []byte(`"/a/../b"  "/b"  a comment`+"\n"+`"/%zz" reject:bad-escape  why`+"\n"), 0o644)
	paths, err := Paths(file)
	if err != nil || !slices.Equal(paths, []Path{{1, "/a/../b", "/b"}, {2, "/%zz", "reject:bad-escape"}}) {
		t.Errorf("read %+v, %v", paths, err)
	}
}
