package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// gostack must answer as the backend does, over the protocol asked for:
// the harness's probe checks status, protocol, X-Backend and body size.
func TestGostackServesEveryProtocol(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := writeCert(cert, key); err != nil {
		t.Fatal(err)
	}
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	const size = 100 // not the default, so -size must reach the handler
	served := make(chan error, 1)
	go func() {
		served <- serveGostack([]string{"-listen", addr, "-cert", cert, "-key", key, "-size", "100"})
	}()
	tg := &target{name: "gostack", addr: addr, tls: true}
	for _, proto := range []string{"h1", "h2", "h3"} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := probe(context.Background(), runKey{tg, proto}, size)
			if err == nil {
				break
			}
			select {
			case err := <-served:
				t.Fatalf("gostack stopped: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", proto, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
