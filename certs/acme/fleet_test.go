package acme

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"perigee/certs"
	"perigee/certs/acme/acmetest"
)

// node is what a child process runs: one PoP's manager behind a TLS
// listener, as the edge node has it.
type node struct {
	Host, CA, CARoots, Storage, Listen string
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
	c := Config{Hosts: []string{n.Host}, CA: n.CA, CARoots: n.CARoots, Storage: n.Storage, Challenges: []string{TLSALPN01}}
	c.SetDefaults()
	m, err := New(c, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer m.Stop()
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
	if err := m.Start(n.Listen, ""); err != nil {
		return err
	}
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if st := m.Stats(); st.Hosts[0].Serial != "" {
			fmt.Printf("%s %d\n", st.Hosts[0].Serial, st.Obtained)
			return nil
		}
	}
	return fmt.Errorf("no certificate: %+v", m.Stats())
}

// Three PoPs in three processes, sharing a storage directory, start at
// once for the same host: one issues (the CA's validation reaches only one
// of them, whichever issues — the others answer from the shared storage),
// the others wait on its lock and load what it stored; all serve the same
// certificate, and the CA issued one.
func TestNodesSharingStorageIssueOnce(t *testing.T) {
	reachable := acmetest.FreeAddr(t)
	pb := acmetest.Start(t, acmetest.Options{HTTPAddr: acmetest.FreeAddr(t), TLSAddr: reachable})
	spec := node{Host: "shared.perigee.test", CA: pb.Directory, CARoots: pb.ServerCA, Storage: t.TempDir()}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		out, errs bytes.Buffer
		cmd       *exec.Cmd
	}
	var nodes []*result
	for i := range 3 {
		addr := reachable
		if i > 0 {
			addr = acmetest.FreeAddr(t)
		}
		spec.Listen = addr
		js, _ := json.Marshal(spec)
		r := &result{cmd: exec.Command(self, "-test.run=^$")}
		r.cmd.Env = append(os.Environ(), childEnv+"="+string(js))
		r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.errs
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, r)
	}
	serials, obtained := map[string]bool{}, 0
	for i, r := range nodes {
		if err := r.cmd.Wait(); err != nil {
			t.Fatalf("node %d: %v\n%s", i, err, r.errs.String())
		}
		var serial string
		var n int
		if _, err := fmt.Fscan(&r.out, &serial, &n); err != nil {
			t.Fatalf("node %d printed %q: %v", i, r.out.String(), err)
		}
		serials[serial] = true
		obtained += n
		t.Logf("node %d (reachable by the CA: %v) obtained %d", i, i == 0, n)
	}
	if len(serials) != 1 || obtained != 1 {
		t.Fatalf("nodes serve %d certificates and obtained %d in all; want one of each", len(serials), obtained)
	}
}
