package edge

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"perigee/bench/machine"
)

// The request-path benchmarks run a real node on loopback in front of a
// sample backend in a child process (so its allocations are not counted),
// over three routes: plain, one trivial Wasm transform (modules/wat's
// poweredby), and one whose gate a Lua policy limits. Besides allocs/op
// and B/op they report cpu-ns/op, the CPU time of this process (node and
// client) per request: unlike ns/op it holds up on shared cores. Run:
//
//	go test ./edge -run '^$' -bench 'Node' -benchmem
//
// docs/benchmarks.md says what each change on the path bought.

// BenchmarkNode sends requests through the node's listeners.
func BenchmarkNode(b *testing.B) {
	n := benchNode(b)
	base := "https://" + n.Addrs().HTTPS
	clients := []struct {
		name string
		c    *http.Client
	}{{"h1", h1Client()}, {"h2", h2Client()}, {"h3", benchH3Client(b)}}
	for _, pc := range clients {
		for _, route := range []string{"plain", "wasm", "lua"} {
			b.Run(pc.name+"/"+route, func(b *testing.B) {
				url := base + "/" + route + "/x"
				get := func() {
					resp, err := pc.c.Get(url)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("GET %s: %d", url, resp.StatusCode)
					}
				}
				get() // connect outside the measurement
				b.ReportAllocs()
				cpu := machine.SelfCPU()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						get()
					}
				})
				b.StopTimer()
				reportCPU(b, cpu)
			})
		}
	}
}

// BenchmarkNodeHandler calls the node's handler directly, without a
// listener or a client: what is left is the node's own per-request work
// and its upstream exchange.
func BenchmarkNodeHandler(b *testing.B) {
	n := benchNode(b)
	for _, route := range []string{"plain", "wasm", "lua"} {
		b.Run(route, func(b *testing.B) {
			r, err := http.NewRequest("GET", "https://bench.test/"+route+"/x", nil)
			if err != nil {
				b.Fatal(err)
			}
			r.RequestURI, r.RemoteAddr, r.Proto, r.ProtoMajor, r.ProtoMinor = "/"+route+"/x", "127.0.0.1:40000", "HTTP/1.1", 1, 1
			r.Header.Set("User-Agent", "bench")
			w := &discardWriter{h: http.Header{}}
			serve := func() {
				clear(w.h)
				w.status = 0
				n.ServeHTTP(w, r)
				if w.status != 200 {
					b.Fatalf("status %d", w.status)
				}
			}
			serve()
			b.ReportAllocs()
			cpu := machine.SelfCPU()
			b.ResetTimer()
			for b.Loop() {
				serve()
			}
			b.StopTimer()
			reportCPU(b, cpu)
		})
	}
}

// discardWriter is the least a ResponseWriter can be.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(200)
	return len(p), nil
}

func benchNode(b *testing.B) *testNode {
	b.Helper()
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		b.Skip("wat2wasm not installed (Debian package wabt)")
	}
	dir := b.TempDir()
	module := filepath.Join(dir, "poweredby.wasm")
	if out, err := exec.Command("wat2wasm", "../modules/wat/poweredby.wat", "-o", module).CombinedOutput(); err != nil {
		b.Fatalf("wat2wasm: %v\n%s", err, out)
	}
	script := filepath.Join(dir, "roomy.lua")
	writeFile(b, script, `function evaluate(m) limit("lua", 1000000000, 1000000000, "roomy") end`)
	yaml := fmt.Sprintf(`listen: {https: "127.0.0.1:0", admin: "127.0.0.1:0"}
access_log: {enabled: false}
transforms:
  poweredby: {module: %q}
services:
  api: {backends: [{url: %q}]}
policies:
  roomy: {script: %q, interval: 50ms}
routes:
  - {name: plain, match: {path_prefix: /plain}, service: api}
  - {name: wasm, match: {path_prefix: /wasm}, service: api, transforms: [poweredby]}
  - {name: lua, match: {path_prefix: /lua}, service: api}
`, module, childBackend(b), script)
	n := startNode(b, yaml)
	deadline := time.Now().Add(30 * time.Second)
	for rps, _ := n.gates.Get("lua").Limit(); rps == 0; rps, _ = n.gates.Get("lua").Limit() {
		if time.Now().After(deadline) {
			b.Fatal("the policy never limited the lua route")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return n
}

// childBackend starts the test binary as a sample backend (see TestMain).
func childBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], "sample-backend", addr)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) || strings.Contains(err.Error(), "no such") {
			b.Fatalf("sample backend on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func benchH3Client(b *testing.B) *http.Client {
	tr := &http3.Transport{TLSClientConfig: insecure()}
	b.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func reportCPU(b *testing.B, since time.Duration) {
	b.ReportMetric(float64(machine.SelfCPU()-since)/float64(b.N), "cpu-ns/op")
}
