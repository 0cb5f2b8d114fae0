package actuator

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestExecRunsCommandWithEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	x, err := NewExec("api", ExecSpec{Command: fmt.Sprintf(`sh -c 'echo "$PERIGEE_SERVICE $PERIGEE_REPLICAS $PERIGEE_REASON" > %s'`, out)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Scale(context.Background(), 4, "load"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	if strings.TrimSpace(string(b)) != "api 4 load" || x.Replicas() != 4 {
		t.Fatalf("command saw %q, replicas %d", b, x.Replicas())
	}
	fail, _ := NewExec("api", ExecSpec{Command: `sh -c 'echo quota exceeded >&2; exit 2'`}, nil)
	if err := fail.Scale(context.Background(), 5, ""); err == nil || !strings.Contains(err.Error(), "quota exceeded") || fail.Replicas() != 0 {
		t.Fatalf("failing command: %v", err)
	}
	if _, err := NewExec("api", ExecSpec{Command: `"open`}, nil); err == nil {
		t.Fatal("bad command line accepted")
	}
}

func TestWebhookSignsAndRetries(t *testing.T) {
	secret := "s3cret"
	var calls atomic.Int32
	var mu sync.Mutex
	var got WebhookBody
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get(SignatureHeader) != Sign([]byte(secret), body) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if calls.Add(1) < 3 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if err := json.Unmarshal(body, &got); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	w, err := NewWebhook("api", WebhookSpec{URL: srv.URL, Secret: secret, Backoff: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Scale(context.Background(), 6, "spike"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if calls.Load() != 3 || got.Service != "api" || got.Replicas != 6 || got.Reason != "spike" || w.Replicas() != 6 {
		t.Fatalf("calls %d, body %+v", calls.Load(), got)
	}
	mu.Unlock()

	// A wrong secret gets 401, which is not retried.
	calls.Store(0)
	bad, _ := NewWebhook("api", WebhookSpec{URL: srv.URL, Secret: "wrong", Backoff: time.Millisecond}, nil)
	if err := bad.Scale(context.Background(), 2, ""); err == nil || !strings.Contains(err.Error(), "401") || calls.Load() != 0 {
		t.Fatalf("wrong secret: %v (calls %d)", err, calls.Load())
	}
	// An endpoint that keeps failing gives up after the attempts.
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer down.Close()
	calls.Store(0)
	flaky, _ := NewWebhook("api", WebhookSpec{URL: down.URL, Secret: secret, Attempts: 3, Backoff: time.Millisecond}, nil)
	if err := flaky.Scale(context.Background(), 2, ""); err == nil || calls.Load() != 3 {
		t.Fatalf("persistent 502: %v after %d calls", err, calls.Load())
	}
	for _, spec := range []WebhookSpec{{URL: "ftp://x", Secret: "s"}, {URL: srv.URL}, {URL: "http://"}} {
		if _, err := NewWebhook("api", spec, nil); err == nil {
			t.Errorf("spec %+v accepted", spec)
		}
	}
}

// fakeAPIServer speaks the Deployment scale subresource over TLS.
func fakeAPIServer(t *testing.T, token string) (*httptest.Server, *atomic.Int64) {
	var replicas atomic.Int64
	replicas.Store(2)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := func(code int, msg string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":%q,"code":%d}`, msg, code)
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			status(http.StatusUnauthorized, "Unauthorized")
			return
		}
		if r.URL.Path != "/apis/apps/v1/namespaces/shop/deployments/api/scale" {
			status(http.StatusNotFound, `deployments.apps "x" not found`)
			return
		}
		if r.Method != http.MethodPatch || r.Header.Get("Content-Type") != "application/merge-patch+json" {
			status(http.StatusUnsupportedMediaType, "want a merge patch")
			return
		}
		var patch struct {
			Spec struct {
				Replicas *int64 `json:"replicas"`
			} `json:"spec"`
		}
		if err := json.NewDecoder(r.Body).Decode(&patch); err != nil || patch.Spec.Replicas == nil || *patch.Spec.Replicas < 0 {
			status(http.StatusUnprocessableEntity, "invalid replicas")
			return
		}
		replicas.Store(*patch.Spec.Replicas)
		fmt.Fprintf(w, `{"kind":"Scale","apiVersion":"autoscaling/v1","metadata":{"name":"api","namespace":"shop"},"spec":{"replicas":%d},"status":{"replicas":2}}`, *patch.Spec.Replicas)
	}))
	t.Cleanup(srv.Close)
	return srv, &replicas
}

func caPEM(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

func TestKubernetesWithKubeconfigToken(t *testing.T) {
	srv, replicas := fakeAPIServer(t, "tok")
	dir := t.TempDir()
	kc := filepath.Join(dir, "config")
	write := func(token string) {
		body := fmt.Sprintf(`apiVersion: v1
kind: Config
current-context: edge
clusters:
- name: c
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: u
  user:
    token: %s
contexts:
- name: edge
  context: {cluster: c, user: u, namespace: shop}
`, srv.URL, base64.StdEncoding.EncodeToString(caPEM(srv)), token)
		if err := os.WriteFile(kc, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("tok")
	k, err := NewKubernetes("api", KubernetesSpec{Deployment: "api", Kubeconfig: kc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close(context.Background())
	if k.Replicas() != -1 {
		t.Fatalf("replicas before any scale = %d", k.Replicas())
	}
	if err := k.Scale(context.Background(), 7, "burst"); err != nil {
		t.Fatal(err)
	}
	if replicas.Load() != 7 || k.Replicas() != 7 {
		t.Fatalf("server has %d, actuator reports %d", replicas.Load(), k.Replicas())
	}
	other, _ := NewKubernetes("api", KubernetesSpec{Deployment: "other", Kubeconfig: kc}, nil)
	if err := other.Scale(context.Background(), 1, ""); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown deployment: %v", err)
	}
	write("wrong")
	denied, _ := NewKubernetes("api", KubernetesSpec{Deployment: "api", Kubeconfig: kc}, nil)
	if err := denied.Scale(context.Background(), 1, ""); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("bad token: %v", err)
	}
}

func TestKubernetesInClusterServiceAccount(t *testing.T) {
	srv, replicas := fakeAPIServer(t, "sa-token")
	dir := t.TempDir()
	for name, body := range map[string][]byte{"token": []byte("sa-token\n"), "ca.crt": caPEM(srv), "namespace": []byte("shop")} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	host, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "https://"), ":")
	t.Setenv("KUBERNETES_SERVICE_HOST", host)
	t.Setenv("KUBERNETES_SERVICE_PORT", port)
	k, err := NewKubernetes("api", KubernetesSpec{Deployment: "api", ServiceAccountDir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Scale(context.Background(), 3, ""); err != nil || replicas.Load() != 3 {
		t.Fatalf("scale: %v, server has %d", err, replicas.Load())
	}
	// An untrusted CA is refused.
	os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("not a cert"), 0o600)
	if _, err := NewKubernetes("api", KubernetesSpec{Deployment: "api", ServiceAccountDir: dir}, nil); err == nil {
		t.Fatal("garbage CA accepted")
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := NewKubernetes("api", KubernetesSpec{Deployment: "api", ServiceAccountDir: dir}, nil); err == nil {
		t.Fatal("accepted outside a cluster without kubeconfig")
	}
}

func TestNewDispatchesOnActuatorName(t *testing.T) {
	if _, err := New("api", Spec{Actuator: "exec", Command: "true"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := New("api", Spec{Actuator: "magic"}, nil, nil); err == nil {
		t.Fatal("unknown actuator accepted")
	}
}

func TestSpecValidateNamesTheField(t *testing.T) {
	for spec, want := range map[Spec]string{
		{Actuator: "magic"}:                                   `actuator: unknown actuator "magic"`,
		{Actuator: KindWebhook}:                               "url: the webhook actuator needs scale.url",
		{Actuator: KindProcess, Command: "run"}:               "command: the process command must take {addr} or {port}",
		{Actuator: KindExec, Command: "true", Min: 3, Max: 1}: "0 ≤ min ≤ max",
	} {
		if err := spec.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: got %v, want %q", spec, err, want)
		}
	}
	if err := (Spec{Actuator: KindProcess, Command: "run {addr}", Min: 1, Max: 3}).Validate(); err != nil {
		t.Errorf("good spec refused: %v", err)
	}
}
