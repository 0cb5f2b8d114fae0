package wasm

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"perigee/units"
)

const addressSpaceChild = "PERIGEE_WASM_TEST_ADDRESS_SPACE"

// A node short of address space (RLIMIT_AS, or vm.max_map_count) cannot map
// a guest's whole memory cap. The guest then gets the memory it starts
// with, and memory.grow past it fails for the guest; taking the cap on the
// Go heap instead ran the node out of memory, which is fatal to it. The
// limit is set in a child process, this test binary run again.
func TestGuestMemoryShortOfAddressSpace(t *testing.T) {
	if os.Getenv(addressSpaceChild) != "" {
		shortOfAddressSpace(t)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestGuestMemoryShortOfAddressSpace$", "-test.v")
	child.Env = append(os.Environ(), addressSpaceChild+"=1")
	out, err := child.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "guest answered 200") || !strings.Contains(string(out), "map 1073741824 bytes of guest memory") {
		t.Fatalf("child short of address space: %v\n%s", err, out)
	}
}

// shortOfAddressSpace leaves the process 512 MiB of address space, loads a
// guest whose memory cap is 1 GiB and asks it to grow its memory, then
// loads one that starts with 1 GiB, which must fail.
func shortOfAddressSpace(t *testing.T) {
	guest := wat(t, `(module
		(memory (export "memory") 1)
		(func (export "handle_request") (result i64)
			;; 1 MiB more: refused, or the request traps
			(if (i32.ne (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
			(i64.const 1))
		(func (export "handle_response") (param i32 i32)))`)
	huge := wat(t, `(module
		(memory (export "memory") 16384)
		(func (export "handle_request") (result i64) (i64.const 1))
		(func (export "handle_response") (param i32 i32)))`)
	h := newTestHost(t)
	var vmSize uint64
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for s := bufio.NewScanner(f); s.Scan(); {
		if _, err := fmt.Sscanf(s.Text(), "VmSize: %d kB", &vmSize); err == nil {
			break
		}
	}
	f.Close()
	if vmSize == 0 {
		t.Fatal("no VmSize in /proc/self/status")
	}
	limit := vmSize<<10 + 512<<20
	if err := unix.Setrlimit(unix.RLIMIT_AS, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		t.Fatal(err)
	}
	tr := loadT(t, h, Spec{Name: "grow", Wasm: guest, Settings: Settings{Pool: 1, Memory: units.ByteSize(1 << 30)}})
	resp, body := get(t, serve(t, NewChain(tr).Then(echoBackend)))
	t.Logf("guest answered %d %q", resp.StatusCode, body)
	if _, err := h.Load(context.Background(), Spec{Name: "huge", Wasm: huge, Settings: Settings{Pool: 1, Memory: units.ByteSize(1 << 30)}}); err != nil {
		t.Logf("load refused: %v", err)
	}
}
