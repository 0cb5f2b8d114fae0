package actuator

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"perigee/files/filestest"
	"perigee/memtest"
	"perigee/units"
)

func TestExecRunsCommandWithEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	x, err := NewExec("api", ExecSpec{Command: fmt.Sprintf(`sh -c 'echo "$PERIGEE_SERVICE $PERIGEE_REPLICAS $PERIGEE_REASON $PERIGEE_TERM" > %s'`, out)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Scale(context.Background(), Request{Replicas: 4, Reason: "load", Term: 9}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	if strings.TrimSpace(string(b)) != "api 4 load 9" || x.Replicas() != 4 {
		t.Fatalf("command saw %q, replicas %d", b, x.Replicas())
	}
	fail, _ := NewExec("api", ExecSpec{Command: `sh -c 'echo quota exceeded >&2; exit 2'`}, nil)
	if err := fail.Scale(context.Background(), Request{Replicas: 5, Reason: ""}); err == nil || !strings.Contains(err.Error(), "quota exceeded") || fail.Replicas() != 0 {
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
	if err := w.Scale(context.Background(), Request{Replicas: 6, Reason: "spike"}); err != nil {
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
	if err := bad.Scale(context.Background(), Request{Replicas: 2, Reason: ""}); err == nil || !strings.Contains(err.Error(), "401") || calls.Load() != 0 {
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
	if err := flaky.Scale(context.Background(), Request{Replicas: 2, Reason: ""}); err == nil || calls.Load() != 3 {
		t.Fatalf("persistent 502: %v after %d calls", err, calls.Load())
	}
	for _, spec := range []WebhookSpec{{URL: "ftp://x", Secret: "s"}, {URL: srv.URL}, {URL: "http://"}} {
		if _, err := NewWebhook("api", spec, nil); err == nil {
			t.Errorf("spec %+v accepted", spec)
		}
	}
}

// fakeAPIServer speaks the Deployment scale subresource over TLS: GET, and
// a merge patch that must carry the current resourceVersion (409 if not).
// bump, when set, runs between a GET and the next patch, as another writer.
type fakeAPI struct {
	replicas atomic.Int64
	version  atomic.Int64
	patches  atomic.Int32
	bump     atomic.Pointer[func()]
}

func fakeAPIServer(t *testing.T, token string) (*httptest.Server, *atomic.Int64) {
	srv, api := newFakeAPI(t, token)
	return srv, &api.replicas
}

func newFakeAPI(t *testing.T, token string) (*httptest.Server, *fakeAPI) {
	api := &fakeAPI{}
	api.replicas.Store(2)
	api.version.Store(100)
	replicas := &api.replicas
	scale := func(w http.ResponseWriter) {
		fmt.Fprintf(w, `{"kind":"Scale","apiVersion":"autoscaling/v1","metadata":{"name":"api","namespace":"shop","resourceVersion":"%d"},"spec":{"replicas":%d},"status":{"replicas":2}}`, api.version.Load(), replicas.Load())
	}
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
		if r.Method == http.MethodGet {
			scale(w)
			if f := api.bump.Load(); f != nil {
				(*f)()
			}
			return
		}
		if r.Method != http.MethodPatch || r.Header.Get("Content-Type") != "application/merge-patch+json" {
			status(http.StatusUnsupportedMediaType, "want a merge patch")
			return
		}
		var patch struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
			Spec struct {
				Replicas *int64 `json:"replicas"`
			} `json:"spec"`
		}
		if err := json.NewDecoder(r.Body).Decode(&patch); err != nil || patch.Spec.Replicas == nil || *patch.Spec.Replicas < 0 {
			status(http.StatusUnprocessableEntity, "invalid replicas")
			return
		}
		api.patches.Add(1)
		if patch.Metadata.ResourceVersion != fmt.Sprint(api.version.Load()) {
			status(http.StatusConflict, "the object has been modified; please apply your changes to the latest version and try again")
			return
		}
		replicas.Store(*patch.Spec.Replicas)
		api.version.Add(1)
		scale(w)
	}))
	t.Cleanup(srv.Close)
	return srv, api
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
	if err := k.Scale(context.Background(), Request{Replicas: 7, Reason: "burst"}); err != nil {
		t.Fatal(err)
	}
	if replicas.Load() != 7 || k.Replicas() != 7 {
		t.Fatalf("server has %d, actuator reports %d", replicas.Load(), k.Replicas())
	}
	other, _ := NewKubernetes("api", KubernetesSpec{Deployment: "other", Kubeconfig: kc}, nil)
	if err := other.Scale(context.Background(), Request{Replicas: 1, Reason: ""}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown deployment: %v", err)
	}
	write("wrong")
	denied, _ := NewKubernetes("api", KubernetesSpec{Deployment: "api", Kubeconfig: kc}, nil)
	if err := denied.Scale(context.Background(), Request{Replicas: 1, Reason: ""}); err == nil || !strings.Contains(err.Error(), "401") {
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
	if err := k.Scale(context.Background(), Request{Replicas: 3, Reason: ""}); err != nil || replicas.Load() != 3 {
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

// The webhook carries the term in a header and the body, and stops
// retrying once the term is no longer held: a deposed leader's retry
// cannot land after its successor's write.
func TestWebhookCarriesTermAndStopsRetryingWhenDeposed(t *testing.T) {
	var calls atomic.Int32
	var mu sync.Mutex
	var headers []string
	var bodies []WebhookBody
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b WebhookBody
		_ = json.NewDecoder(r.Body).Decode(&b)
		mu.Lock()
		headers, bodies = append(headers, r.Header.Get(TermHeader)), append(bodies, b)
		mu.Unlock()
		if calls.Add(1) == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	w, err := NewWebhook("api", WebhookSpec{URL: srv.URL, Secret: "s", Backoff: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Scale(context.Background(), Request{Replicas: 3, Term: 7}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(headers) != 2 || headers[1] != "7" || bodies[1].Term != 7 || bodies[1].Replicas != 3 {
		t.Fatalf("headers %v, bodies %+v", headers, bodies)
	}
	mu.Unlock()

	calls.Store(0)
	held := atomic.Bool{}
	held.Store(true)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		held.Store(false) // deposed while the first attempt was out
		http.Error(w, "busy", http.StatusServiceUnavailable)
	})
	err = w.Scale(context.Background(), Request{Replicas: 5, Term: 8, Held: held.Load})
	if !errors.Is(err, ErrDeposed) || calls.Load() != 1 || w.Replicas() != 3 {
		t.Fatalf("deposed: err %v after %d calls, replicas %d", err, calls.Load(), w.Replicas())
	}
}

// The Kubernetes update is conditional on the resourceVersion read: a
// change in between is a 409, after which it reads again, and gives up if
// the term has gone.
func TestKubernetesPatchIsConditionalOnResourceVersion(t *testing.T) {
	srv, api := newFakeAPI(t, "tok")
	dir := t.TempDir()
	kc := filepath.Join(dir, "config")
	os.WriteFile(kc, fmt.Appendf(nil, `apiVersion: v1
kind: Config
current-context: edge
clusters: [{name: c, cluster: {server: %s, certificate-authority-data: %s}}]
users: [{name: u, user: {token: tok}}]
contexts: [{name: edge, context: {cluster: c, user: u, namespace: shop}}]
`, srv.URL, base64.StdEncoding.EncodeToString(caPEM(srv))), 0o600)
	k, err := NewKubernetes("api", KubernetesSpec{Deployment: "api", Kubeconfig: kc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close(context.Background())
	// Another writer changes the scale right after our first read.
	var once sync.Once
	bump := func() { once.Do(func() { api.replicas.Store(9); api.version.Add(1) }) }
	api.bump.Store(&bump)
	if err := k.Scale(context.Background(), Request{Replicas: 4, Term: 2}); err != nil {
		t.Fatal(err)
	}
	if api.replicas.Load() != 4 || api.patches.Load() != 2 {
		t.Fatalf("replicas %d after %d patches, want 4 after a 409 and a retry", api.replicas.Load(), api.patches.Load())
	}
	// Someone keeps writing: bounded attempts, then the conflict is reported.
	always := func() { api.version.Add(1) }
	api.bump.Store(&always)
	api.patches.Store(0)
	if err := k.Scale(context.Background(), Request{Replicas: 6}); err == nil || !strings.Contains(err.Error(), "409") || api.patches.Load() != conflictAttempts {
		t.Fatalf("endless conflicts: %v after %d patches", err, api.patches.Load())
	}
	// Deposed between the conflict and the retry: no second patch.
	api.patches.Store(0)
	held := atomic.Bool{}
	held.Store(true)
	deposeOnRead := func() { api.version.Add(1); held.Store(false) }
	api.bump.Store(&deposeOnRead)
	if err := k.Scale(context.Background(), Request{Replicas: 1, Term: 3, Held: held.Load}); !errors.Is(err, ErrDeposed) || api.patches.Load() != 1 {
		t.Fatalf("deposed: %v after %d patches", err, api.patches.Load())
	}
}

func TestBehaviorDefaultsAndValidate(t *testing.T) {
	b := Behavior{}.WithDefaults()
	if b.DownWindow.D() != DefaultDownWindow || b.UpWindow.D() != 0 || b.Up != DefaultUp || b.Down != DefaultDown {
		t.Fatalf("defaults: %+v", b)
	}
	if err := (Behavior{}).Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	long := units.Duration(2 * time.Hour)
	for b, want := range map[*Behavior]string{
		{DownWindow: &long}:                     "behavior.scale_down_window: the scale-down window 2h0m0s",
		{Up: Rate{Pods: -1}}:                    "behavior.scale_up: the scale-up pods",
		{Down: Rate{Percent: 50, Period: long}}: "behavior.scale_down.period",
	} {
		if err := b.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want %q", *b, err, want)
		}
	}
}

// A scale write is for the endpoint configured, nowhere else: an answer
// that redirects (a moved endpoint, or one taken over) must fail the scale,
// not be followed to whatever then says 200 (a 302 even turns the POST into
// a GET that changes nothing), and the signed body must not be re-sent.
func TestWebhookDoesNotFollowRedirects(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect} {
		hook := httptest.NewServer(http.RedirectHandler(other.URL+"/taken", code))
		w, err := NewWebhook("api", WebhookSpec{URL: hook.URL, Secret: "s", Backoff: time.Millisecond}, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = w.Scale(context.Background(), Request{Replicas: 4, Reason: "load", Term: 3})
		hook.Close()
		if err == nil || !strings.Contains(err.Error(), strconv.Itoa(code)) || w.Replicas() != 0 {
			t.Errorf("%d from the webhook: err = %v, replicas %d; want a failure naming the status", code, err, w.Replicas())
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
}

// The same holds for the Kubernetes API server: its answer is the scale,
// or a failure.
func TestKubernetesDoesNotFollowRedirects(t *testing.T) {
	var elsewhere atomic.Int32
	other, _ := fakeAPIServer(t, "tok")
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	k, err := NewKubernetes("api", KubernetesSpec{Deployment: "api", Kubeconfig: kubeconfigFor(t, srv, "shop")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close(context.Background())
	err = k.Scale(context.Background(), Request{Replicas: 7, Reason: "burst"})
	if err == nil || !strings.Contains(err.Error(), "307") || k.Replicas() != -1 {
		t.Fatalf("redirecting API server: err = %v, replicas %d; want a failure naming the status", err, k.Replicas())
	}
	if n := elsewhere.Load(); n != 1 {
		t.Errorf("the API server got %d requests, want the 1 that failed", n)
	}
}

// An API server's answer is read up to 1 MiB; a longer one is cut, and the
// failure must say so rather than leave a JSON syntax error to puzzle over.
func TestKubernetesOversizedAnswerIsNamed(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"metadata":{"resourceVersion":"7"},"spec":{"replicas":2},"pad":"%s"}`, strings.Repeat("x", 2<<20))
	}))
	defer srv.Close()
	k, err := NewKubernetes("api", KubernetesSpec{Deployment: "api", Kubeconfig: kubeconfigFor(t, srv, "default")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close(context.Background())
	err = k.Scale(context.Background(), Request{Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "1 MiB") {
		t.Fatalf("a 2 MiB answer: %v; want a failure that names the limit", err)
	}
}

// A failed scale's error is kept: the engine logs it as the decision's
// rejection, keeps the last 1000 decisions and ships them, and retries on
// every evaluation that asks again. An API server's Status message went
// into it whole, up to the 1 MiB read of an answer, so a server failing
// each scale with a long message had the decision log hold a gibibyte.
// The error keeps 512 bytes of it, as the webhook's keeps of its answer.
func TestKubernetesFailureKeepsLittleOfTheAnswer(t *testing.T) {
	long := strings.Repeat("quota exceeded; ", (1<<20-1024)/16)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `{"kind":"Status","status":"Failure","message":%q,"code":403}`, long)
	}))
	defer srv.Close()
	k, err := NewKubernetes("api", KubernetesSpec{Deployment: "api", Kubeconfig: kubeconfigFor(t, srv, "default")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close(context.Background())
	const kept = 64 // failures held, as the decision log holds them
	errs := make([]string, 0, kept)
	before := memtest.LiveHeap()
	for range kept {
		err := k.Scale(context.Background(), Request{Replicas: 3})
		if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "quota exceeded") {
			t.Fatalf("a refused scale: %.300v; want a failure naming the status and the start of the message", err)
		}
		errs = append(errs, err.Error())
	}
	grew := memtest.LiveHeap() - before
	t.Logf("%d failures hold %d KiB", kept, grew>>10)
	if len(errs[0]) > 1024 {
		t.Errorf("one failure is %d bytes", len(errs[0]))
	}
	if grew > 1<<20 {
		t.Errorf("%d failures hold %d KiB of heap, over 1 MiB", kept, grew>>10)
	}
	runtime.KeepAlive(errs)
}

// kubeconfigFor writes a kubeconfig whose current context reaches srv with
// the token "tok" in namespace ns.
func kubeconfigFor(t *testing.T, srv *httptest.Server, ns string) string {
	t.Helper()
	kc := filepath.Join(t.TempDir(), "config")
	body := fmt.Sprintf("current-context: edge\nclusters:\n- name: c\n  cluster:\n    server: %s\n    certificate-authority-data: %s\n"+
		"users:\n- name: u\n  user:\n    token: tok\ncontexts:\n- name: edge\n  context: {cluster: c, user: u, namespace: %s}\n",
		srv.URL, base64.StdEncoding.EncodeToString(caPEM(srv)), ns)
	if err := os.WriteFile(kc, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return kc
}

// The exec actuator's contract is the command's exit status. A command
// that starts something in the background and exits 0 has scaled, even
// though what it started still holds its output: that is no failure (and
// one that made the scaler run the command again).
func TestExecSucceedsWhenItsBackgroundChildHoldsTheOutput(t *testing.T) {
	x, err := NewExec("api", ExecSpec{Command: `sh -c 'sleep 3 & echo scaled; exit 0'`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Scale(context.Background(), Request{Replicas: 4, Reason: "load", Term: 1}); err != nil || x.Replicas() != 4 {
		t.Fatalf("exit 0 with a background child: err = %v, replicas %d", err, x.Replicas())
	}
	fail, _ := NewExec("api", ExecSpec{Command: `sh -c 'sleep 3 & exit 3'`}, nil)
	if err := fail.Scale(context.Background(), Request{Replicas: 5}); err == nil || fail.Replicas() != 0 {
		t.Fatalf("exit 3 with a background child: err = %v, replicas %d", err, fail.Replicas())
	}
}

// The kubeconfig, its CA and token files, and the service account's, are
// read with os.ReadFile, the token on every call: a FIFO at one of those
// paths blocked NewKubernetes, or every Scale, in open(2) for good, where
// no context reaches. Such a path is refused.
func TestKubernetesFilesThatAreNoFilesAreRefused(t *testing.T) {
	fifo := filestest.FIFO(t, filepath.Join(t.TempDir(), "fifo"))
	filestest.Refused(t, "a FIFO as the kubeconfig", func() error {
		_, err := NewKubernetes("api", KubernetesSpec{Deployment: "api", Kubeconfig: fifo}, nil)
		return err
	}, "not a regular file")
	srv, _ := fakeAPIServer(t, "tok")
	kc := kubeconfigFor(t, srv, "shop")
	b, _ := os.ReadFile(kc)
	os.WriteFile(kc, []byte(strings.Replace(string(b), "token: tok", "tokenFile: "+fifo, 1)), 0o600)
	k, err := NewKubernetes("api", KubernetesSpec{Deployment: "api", Kubeconfig: kc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close(context.Background())
	filestest.Refused(t, "a FIFO as the token file", func() error { return k.Scale(context.Background(), Request{Replicas: 3}) }, "not a regular file")
}
