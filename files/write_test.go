package files

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestWriteAtomicReplacesAndWritesNothingThrough(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if _, err := WriteAtomic(path, []byte("old")); err != nil {
		t.Fatal(err)
	}
	// A symlink planted at the temporary name must not carry the write to
	// what it names.
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, path+".tmp"); err != nil {
		t.Fatal(err)
	}
	info, err := WriteAtomic(path, []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() != 3 || !info.Mode().IsRegular() {
		t.Fatalf("info: size %d, mode %v", info.Size(), info.Mode())
	}
	for p, want := range map[string]string{path: "new", victim: "keep"} {
		if b, err := os.ReadFile(p); err != nil || string(b) != want {
			t.Fatalf("%s: %q, %v; want %q", filepath.Base(p), b, err, want)
		}
	}
	if _, err := os.Lstat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("the temporary file is left: %v", err)
	}

	// What cannot be removed at the temporary name fails the write and
	// leaves the old version.
	if err := os.MkdirAll(filepath.Join(path+".tmp", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteAtomic(path, []byte("newer")); err == nil {
		t.Fatal("wrote through a directory at the temporary name")
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Fatalf("after a failed write: %q", b)
	}
	if _, err := WriteAtomic(filepath.Join(dir, "missing", "state"), []byte("x")); err == nil {
		t.Fatal("wrote into a directory that is not there")
	}
}

// A writer killed at any moment leaves the old version or the new one,
// whole: the file is never empty, short or a mix.
func TestWriteAtomicSurvivesSIGKILL(t *testing.T) {
	if dir := os.Getenv("FILES_TEST_WRITER"); dir != "" {
		writeForever(filepath.Join(dir, "state"))
		return
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	size := 256 << 10
	for round := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestWriteAtomicSurvivesSIGKILL$")
		cmd.Env = append(os.Environ(), "FILES_TEST_WRITER="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill once the file is there, at a moment that moves with the round.
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(path); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(round*7) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if len(b) != size || (!bytes.Equal(b, bytes.Repeat(b[:1], size))) || (b[0] != 'a' && b[0] != 'b') {
			t.Fatalf("round %d: %d bytes, first %q: not one whole version", round, len(b), b[:min(len(b), 1)])
		}
	}
}

func writeForever(path string) {
	a, b := bytes.Repeat([]byte("a"), 256<<10), bytes.Repeat([]byte("b"), 256<<10)
	for i := 0; ; i++ {
		v := a
		if i%2 == 1 {
			v = b
		}
		if _, err := WriteAtomic(path, v); err != nil {
			os.Exit(3)
		}
	}
}
