package acme

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"perigee/logtest"
	"perigee/units"
)

// hostileCA is an ACME server that takes an order, hands out a TLS-ALPN-01
// challenge, and then answers every poll of the authorization "pending,
// come back in 31 years". It checks no signature: the client under test
// is not what it tests. polls counts the authorization's polls.
type hostileCA struct {
	srv   *httptest.Server
	roots string // PEM file of its HTTPS certificate, for ca_roots
	polls atomic.Int64
}

func startHostileCA(t *testing.T, host string) *hostileCA {
	ca := &hostileCA{}
	mux := http.NewServeMux()
	url := func(path string) string { return ca.srv.URL + path }
	reply := func(w http.ResponseWriter, status int, body any) {
		w.Header().Set("Replay-Nonce", fmt.Sprintf("nonce-%d", time.Now().UnixNano()))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(body)
	}
	authz := func(status string) map[string]any {
		return map[string]any{
			"status":     status,
			"identifier": map[string]string{"type": "dns", "value": host},
			"challenges": []map[string]string{{"type": "tls-alpn-01", "url": url("/chall"), "token": "Xy0aXJzdC10b2tlbi1vZi1hLWNoYWxsZW5nZQ", "status": status}},
		}
	}
	mux.HandleFunc("GET /dir", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, map[string]string{"newNonce": url("/nonce"), "newAccount": url("/account"), "newOrder": url("/order"), "revokeCert": url("/revoke"), "keyChange": url("/key")})
	})
	mux.HandleFunc("/nonce", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Replay-Nonce", fmt.Sprintf("nonce-%d", time.Now().UnixNano()))
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("POST /account", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", url("/account/1"))
		reply(w, http.StatusCreated, map[string]any{"status": "valid"})
	})
	mux.HandleFunc("POST /order", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", url("/order/1"))
		reply(w, http.StatusCreated, map[string]any{
			"status": "pending", "identifiers": []map[string]string{{"type": "dns", "value": host}},
			"authorizations": []string{url("/authz")}, "finalize": url("/finalize"),
		})
	})
	mux.HandleFunc("POST /authz", func(w http.ResponseWriter, r *http.Request) {
		if ca.polls.Add(1) > 1 {
			w.Header().Set("Retry-After", "1000000000")
		}
		reply(w, 200, authz("pending"))
	})
	mux.HandleFunc("POST /chall", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, map[string]string{"type": "tls-alpn-01", "url": url("/chall"), "token": "Xy0aXJzdC10b2tlbi1vZi1hLWNoYWxsZW5nZQ", "status": "processing"})
	})
	ca.srv = httptest.NewTLSServer(mux)
	t.Cleanup(ca.srv.Close)
	ca.roots = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca.roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// A CA that answers each poll with a Retry-After of 31 years held the
// issuance — and the storage lock on the name, which every node sharing
// the storage waits on — for good, with nothing logged and nothing
// counted as failed. Each attempt is bounded by issue_timeout: the attempt
// fails, is logged with the host and why, counted in Stats.Failed, and
// Stop returns.
func TestIssuanceAgainstACAThatNeverFinishesIsBounded(t *testing.T) {
	const host = "stuck.perigee.test"
	ca := startHostileCA(t, host)
	// The HTTPS listener TLS-ALPN-01 would be answered on; the CA never
	// validates, so nothing is served on it.
	https, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer https.Close()
	var logs logtest.Buffer
	c := Config{Hosts: []string{host}, CA: ca.srv.URL + "/dir", CARoots: ca.roots, Storage: t.TempDir(), Challenges: []string{TLSALPN01}, IssueTimeout: units.Duration(2 * time.Second)}
	c.SetDefaults()
	m, err := New(c, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(https.Addr().String(), ""); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); m.Stats().Failed == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			m.Stop()
			t.Fatalf("after %d polls of the authorization the issuance neither ended nor failed:\n%s", ca.polls.Load(), logs.String())
		}
	}
	if ca.polls.Load() < 2 {
		t.Fatalf("the issuance failed before the CA's Retry-After (%d polls):\n%s", ca.polls.Load(), logs.String())
	}
	if log := logs.String(); !strings.Contains(log, "certificate not obtained") || !strings.Contains(log, host) || !strings.Contains(log, "issue_timeout") {
		t.Fatalf("the failure is not logged with the host and the bound:\n%s", log)
	}
	if st := m.Stats(); st.Hosts[0].Serial != "" {
		t.Fatalf("a certificate from a CA that issued none: %+v", st)
	}
	m.Stop()
}
