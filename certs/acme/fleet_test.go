package acme

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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
	Challenge                          string
	HTTPListen                         string // for HTTP-01
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
	}
	var nodes []*result
	for i := range 3 {
		spec.Host, spec.Listen, spec.HTTPListen = "other.perigee.test", reachable[TLSALPN01], ""
		if challenge == HTTP01 {
			spec.HTTPListen = reachable[HTTP01]
		}
		if i > 0 {
			spec.Host, spec.Listen = "shared.perigee.test", acmetest.FreeAddr(t)
			if challenge == HTTP01 {
				spec.HTTPListen = acmetest.FreeAddr(t)
			}
		}
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
		t.Logf("node %d (reachable by the CA: %v) obtained %d", i, i == 0, n)
		if i == 0 {
			if n != 1 {
				t.Errorf("the reachable node obtained %d certificates for its own name, want 1", n)
			}
			continue
		}
		serials[serial] = true
		obtained += n
	}
	if len(serials) != 1 || obtained != 1 {
		t.Fatalf("the shared name's nodes serve %d certificates and obtained %d in all; want one of each", len(serials), obtained)
	}
}
