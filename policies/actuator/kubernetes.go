package actuator

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"

	"perigee/files"
)

// KubernetesSpec names a Deployment and how to reach its API server.
type KubernetesSpec struct {
	Namespace  string // default: the service account's or the context's namespace, else "default"
	Deployment string
	// Kubeconfig is a kubeconfig file whose current context authenticates
	// with a bearer token; empty means the in-cluster service account.
	Kubeconfig string
	Timeout    time.Duration // of one Scale; default 10s
	// ServiceAccountDir holds token, ca.crt and namespace in a pod;
	// default /var/run/secrets/kubernetes.io/serviceaccount.
	ServiceAccountDir string
}

const defaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Kubernetes sets spec.replicas through the Deployment's scale
// subresource with a JSON merge patch conditional on resourceVersion.
type Kubernetes struct {
	service  string
	endpoint string                 // .../deployments/NAME/scale
	token    func() (string, error) // re-read per call: projected tokens rotate
	client   *http.Client
	log      *slog.Logger
	timeout  time.Duration
	replicas atomic.Int64
}

// NewKubernetes resolves the API server, credentials and namespace.
func NewKubernetes(service string, spec KubernetesSpec, log *slog.Logger) (*Kubernetes, error) {
	fail := func(err error) (*Kubernetes, error) {
		return nil, fmt.Errorf("kubernetes actuator %s: %w", service, err)
	}
	if spec.Deployment == "" {
		return fail(errors.New("no deployment named"))
	}
	var c conn
	var err error
	if spec.Kubeconfig != "" {
		c, err = fromKubeconfig(spec.Kubeconfig)
	} else {
		c, err = inCluster(spec.ServiceAccountDir)
	}
	if err != nil {
		return fail(err)
	}
	ns := spec.Namespace
	if ns == "" {
		ns = c.namespace
	}
	if ns == "" {
		ns = "default"
	}
	if spec.Timeout == 0 {
		spec.Timeout = 10 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: c.roots, MinVersion: tls.VersionTLS12}
	k := &Kubernetes{
		service: service,
		endpoint: strings.TrimSuffix(c.server, "/") + "/apis/apps/v1/namespaces/" + url.PathEscape(ns) +
			"/deployments/" + url.PathEscape(spec.Deployment) + "/scale",
		token:   c.token,
		client:  &http.Client{Transport: tr, CheckRedirect: noRedirects},
		log:     log.With("service", service, "actuator", "kubernetes", "deployment", ns+"/"+spec.Deployment),
		timeout: spec.Timeout,
	}
	k.replicas.Store(-1)
	return k, nil
}

// conn is how to reach and authenticate to an API server.
type conn struct {
	server    string
	roots     *x509.CertPool // nil means the system roots
	token     func() (string, error)
	namespace string
}

func inCluster(dir string) (conn, error) {
	if dir == "" {
		dir = defaultServiceAccountDir
	}
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return conn{}, errors.New("not in a cluster (KUBERNETES_SERVICE_HOST/PORT unset) and no kubeconfig given")
	}
	tokenPath := filepath.Join(dir, "token")
	if _, err := files.Read(tokenPath, maxFile); err != nil {
		return conn{}, fmt.Errorf("service account token: %w", err)
	}
	roots, err := poolFromFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return conn{}, err
	}
	ns, _ := files.Read(filepath.Join(dir, "namespace"), maxFile)
	return conn{
		server:    "https://" + net.JoinHostPort(host, port),
		roots:     roots,
		token:     fileToken(tokenPath),
		namespace: strings.TrimSpace(string(ns)),
	}, nil
}

func fileToken(path string) func() (string, error) {
	return func() (string, error) {
		b, err := files.Read(path, maxFile)
		if err != nil {
			return "", fmt.Errorf("token: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
}

// maxFile bounds a kubeconfig, CA bundle or token file.
const maxFile = 1 << 20

func poolFromFile(path string) (*x509.CertPool, error) {
	pem, err := files.Read(path, maxFile)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	return poolFromPEM(pem, path)
}

func poolFromPEM(pem []byte, from string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster CA from %s: no certificate found", from)
	}
	return pool, nil
}

// kubeconfig is the part of the file this actuator reads.
type kubeconfig struct {
	CurrentContext string `yaml:"current-context"`
	Clusters       []struct {
		Name    string `yaml:"name"`
		Cluster struct {
			Server     string `yaml:"server"`
			CAData     string `yaml:"certificate-authority-data"`
			CAFile     string `yaml:"certificate-authority"`
			SkipVerify bool   `yaml:"insecure-skip-tls-verify"`
		} `yaml:"cluster"`
	} `yaml:"clusters"`
	Users []struct {
		Name string `yaml:"name"`
		User struct {
			Token     string `yaml:"token"`
			TokenFile string `yaml:"tokenFile"`
		} `yaml:"user"`
	} `yaml:"users"`
	Contexts []struct {
		Name    string `yaml:"name"`
		Context struct {
			Cluster   string `yaml:"cluster"`
			User      string `yaml:"user"`
			Namespace string `yaml:"namespace"`
		} `yaml:"context"`
	} `yaml:"contexts"`
}

func fromKubeconfig(path string) (conn, error) {
	b, err := files.Read(path, maxFile)
	if err != nil {
		return conn{}, fmt.Errorf("kubeconfig: %w", err)
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return conn{}, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	var c conn
	var clusterName, userName string
	found := false
	for _, x := range kc.Contexts {
		if x.Name == kc.CurrentContext {
			clusterName, userName, c.namespace, found = x.Context.Cluster, x.Context.User, x.Context.Namespace, true
		}
	}
	if !found {
		return conn{}, fmt.Errorf("kubeconfig %s: current context %q not found", path, kc.CurrentContext)
	}
	found = false
	for _, x := range kc.Clusters {
		if x.Name != clusterName {
			continue
		}
		found = true
		c.server = x.Cluster.Server
		switch {
		case x.Cluster.SkipVerify:
			return conn{}, fmt.Errorf("kubeconfig %s: insecure-skip-tls-verify is not supported", path)
		case x.Cluster.CAData != "":
			pem, err := base64.StdEncoding.DecodeString(x.Cluster.CAData)
			if err != nil {
				return conn{}, fmt.Errorf("kubeconfig %s: certificate-authority-data: %w", path, err)
			}
			if c.roots, err = poolFromPEM(pem, path); err != nil {
				return conn{}, err
			}
		case x.Cluster.CAFile != "":
			if c.roots, err = poolFromFile(x.Cluster.CAFile); err != nil {
				return conn{}, err
			}
		}
	}
	if !found || c.server == "" {
		return conn{}, fmt.Errorf("kubeconfig %s: cluster %q not found or has no server", path, clusterName)
	}
	for _, x := range kc.Users {
		if x.Name != userName {
			continue
		}
		switch {
		case x.User.Token != "":
			tok := x.User.Token
			c.token = func() (string, error) { return tok, nil }
		case x.User.TokenFile != "":
			c.token = fileToken(x.User.TokenFile)
		}
	}
	if c.token == nil {
		return conn{}, fmt.Errorf("kubeconfig %s: user %q has no token (only bearer tokens are supported)", path, userName)
	}
	return c, nil
}

// scaleObject is the autoscaling/v1 Scale the API server answers with.
type scaleObject struct {
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Spec struct {
		Replicas int `json:"replicas"`
	} `json:"spec"`
	Status struct {
		Replicas int `json:"replicas"`
	} `json:"status"`
}

// conflictAttempts bounds the read-then-patch rounds of one Scale when
// someone else keeps changing the Deployment's scale.
const conflictAttempts = 3

// errConflict is the API server's 409: the resourceVersion read has been
// superseded.
var errConflict = errors.New("conflict")

// Scale reads the scale subresource and patches spec.replicas on
// condition that its resourceVersion is still the one read, so that a
// write never lands on a state its leader did not see. On a conflict it
// reads again, gives up if the term is no longer held, and retries up to
// conflictAttempts times.
func (k *Kubernetes) Scale(ctx context.Context, r Request) error {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		cur, err := k.call(ctx, http.MethodGet, nil)
		if err != nil {
			return err
		}
		if attempt > 1 && !r.held() {
			return fmt.Errorf("kubernetes actuator %s: term %d: %w", k.service, r.Term, ErrDeposed)
		}
		patch, _ := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": cur.Metadata.ResourceVersion},
			"spec":     map[string]any{"replicas": r.Replicas},
		})
		s, err := k.call(ctx, http.MethodPatch, patch)
		if errors.Is(err, errConflict) && attempt < conflictAttempts {
			k.log.Info("scale changed under us; reading it again", "attempt", attempt)
			continue
		}
		if err != nil {
			return err
		}
		k.replicas.Store(int64(s.Spec.Replicas))
		k.log.Info("scaled", "replicas", s.Spec.Replicas, "ready", s.Status.Replicas, "reason", r.Reason, "term", r.Term)
		return nil
	}
}

// maxAnswer bounds what is read of an API server's answer; a Scale is a
// few hundred bytes.
const maxAnswer = 1 << 20

// call sends one request to the scale subresource and decodes the answer.
func (k *Kubernetes) call(ctx context.Context, method string, body []byte) (scaleObject, error) {
	var s scaleObject
	req, err := http.NewRequestWithContext(ctx, method, k.endpoint, bytes.NewReader(body))
	if err != nil {
		return s, fmt.Errorf("kubernetes actuator %s: %w", k.service, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/merge-patch+json")
	}
	token, err := k.token()
	if err != nil {
		return s, fmt.Errorf("kubernetes actuator %s: %w", k.service, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := k.client.Do(req)
	if err != nil {
		return s, fmt.Errorf("kubernetes actuator %s: %w", k.service, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return s, fmt.Errorf("kubernetes actuator %s: %s %s: %s: reading the answer: %w", k.service, method, k.endpoint, resp.Status, err)
	}
	if len(b) > maxAnswer {
		return s, fmt.Errorf("kubernetes actuator %s: %s %s: %s: the answer is over 1 MiB", k.service, method, k.endpoint, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		var st struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(b, &st)
		err := fmt.Errorf("kubernetes actuator %s: %s %s: %s: %s", k.service, method, k.endpoint, resp.Status, quoteAnswer(st.Message))
		if resp.StatusCode == http.StatusConflict {
			err = fmt.Errorf("%w: %w", errConflict, err)
		}
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("kubernetes actuator %s: decode scale: %w", k.service, err)
	}
	return s, nil
}

// Replicas is spec.replicas as the API server last confirmed it, or -1
// before the first Scale.
func (k *Kubernetes) Replicas() int { return int(k.replicas.Load()) }

// Close releases idle connections.
func (k *Kubernetes) Close(context.Context) error {
	k.client.CloseIdleConnections()
	return nil
}
