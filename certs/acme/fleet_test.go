package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"perigee/certs"
	"perigee/certs/acme/acmetest"
)

// node is what a child process runs: one PoP's manager behind a TLS
// listener, as the edge node has it.
type node struct {
	Host, CA, CARoots, Storage, Listen string
	Challenge                          string
	HTTPListen                         string // for HTTP-01
	Linger                             bool   // keep answering challenges until stdin closes
}

const childEnv = "PERIGEE_ACME_TEST_NODE"

// TestMain lets the test binary be a node in another process, so that PoPs
// sharing a storage directory coordinate only through it.
func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		if err := runNode(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runNode serves TLS with the manager until it holds a certificate, then
// prints its serial and how many certificates it obtained itself.
func runNode(spec string) error {
	var n node
	if err := json.Unmarshal([]byte(spec), &n); err != nil {
		return err
	}
	c := Config{Hosts: []string{n.Host}, CA: n.CA, CARoots: n.CARoots, Storage: n.Storage, Challenges: []string{n.Challenge}}
	c.SetDefaults()
	m, err := New(c, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer m.Stop(context.Background())
	var store certs.Store
	store.Use(m)
	ln, err := tls.Listen("tcp", n.Listen, store.TLSConfig("http/1.1"))
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	if n.HTTPListen != "" {
		hl, err := net.Listen("tcp", n.HTTPListen)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: m.HTTPHandler("443"), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(hl)
		defer srv.Close()
	}
	if err := m.Start(n.Listen, n.HTTPListen); err != nil {
		return err
	}
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if st := m.Stats(); st.Hosts[0].Serial != "" {
			fmt.Printf("%s %d\n", st.Hosts[0].Serial, st.Obtained)
			if n.Linger {
				_, _ = io.Copy(io.Discard, os.Stdin)
			}
			return nil
		}
	}
	return fmt.Errorf("no certificate: %+v", m.Stats())
}

// PoPs in separate processes share a storage directory. The CA's
// validation reaches only the first, as a load balancer may send it to any
// node; that node manages another name, so the order for the shared name
// is always started by a node the CA cannot reach. The two nodes that
// manage the shared name start at once: one issues, the other waits on its
// lock and loads what it stored, and both serve the same certificate. The
// reachable node answers the challenge it did not start from the shared
// storage — on its HTTPS listener for TLS-ALPN-01, on its plain HTTP
// listener for HTTP-01.
func TestNodesSharingStorageIssueOnce(t *testing.T) {
	for _, challenge := range []string{TLSALPN01, HTTP01} {
		t.Run(challenge, func(t *testing.T) { issueOnce(t, challenge) })
	}
}

func issueOnce(t *testing.T, challenge string) {
	reachable := map[string]string{TLSALPN01: acmetest.FreeAddr(t), HTTP01: acmetest.FreeAddr(t)}
	pb := acmetest.Start(t, acmetest.Options{HTTPAddr: reachable[HTTP01], TLSAddr: reachable[TLSALPN01]})
	spec := node{CA: pb.Directory, CARoots: pb.ServerCA, Storage: t.TempDir(), Challenge: challenge}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		out, errs bytes.Buffer
		cmd       *exec.Cmd
		stdin     io.WriteCloser
	}
	start := func(spec node) *result {
		js, _ := json.Marshal(spec)
		r := &result{cmd: exec.Command(self, "-test.run=^$")}
		r.cmd.Env = append(os.Environ(), childEnv+"="+string(js))
		r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.errs
		if r.stdin, err = r.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	wait := func(i int, r *result) (serial string, obtained int) {
		if err := r.cmd.Wait(); err != nil {
			t.Fatalf("node %d: %v\n%s", i, err, r.errs.String())
		}
		if _, err := fmt.Fscan(&r.out, &serial, &obtained); err != nil {
			t.Fatalf("node %d printed %q: %v", i, r.out.String(), err)
		}
		t.Logf("node %d (reachable by the CA: %v) obtained %d", i, i == 0, obtained)
		return serial, obtained
	}
	// The reachable node first: once it holds its own certificate, it is
	// surely answering, and it goes on until the others are done.
	spec.Host, spec.Listen, spec.Linger = "other.perigee.test", reachable[TLSALPN01], true
	if challenge == HTTP01 {
		spec.HTTPListen = reachable[HTTP01]
	}
	first := start(spec)
	defer func() { first.stdin.Close(); first.cmd.Wait() }()
	for deadline := time.Now().Add(90 * time.Second); !storedCert(spec.Storage, "other.perigee.test"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the reachable node holds no certificate of its own")
		}
	}
	var nodes []*result
	for range 2 {
		spec.Host, spec.Listen, spec.Linger = "shared.perigee.test", acmetest.FreeAddr(t), false
		if challenge == HTTP01 {
			spec.HTTPListen = acmetest.FreeAddr(t)
		}
		nodes = append(nodes, start(spec))
	}
	serials, obtained := map[string]bool{}, 0
	for i, r := range nodes {
		serial, n := wait(i+1, r)
		serials[serial] = true
		obtained += n
	}
	first.stdin.Close()
	if _, n := wait(0, first); n != 1 {
		t.Errorf("the reachable node obtained %d certificates for its own name, want 1", n)
	}
	if len(serials) != 1 || obtained != 1 {
		t.Fatalf("the shared name's nodes serve %d certificates and obtained %d in all; want one of each", len(serials), obtained)
	}
}

// storedCert reports whether storage holds a certificate for host.
func storedCert(storage, host string) bool {
	found := false
	_ = filepath.WalkDir(storage, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == host+".crt" {
			found = true
		}
		return nil
	})
	return found
}
