// Package actuator carries out scale decisions: it runs local processes,
// runs a command, calls a webhook or sets a Kubernetes Deployment's
// replicas.
package actuator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Actuator sets the replica count of one service.
type Actuator interface {
	// Scale sets the desired replica count and returns when it is in
	// effect or has failed.
	Scale(ctx context.Context, r Request) error
	// Replicas is the count currently in effect.
	Replicas() int
	// Close releases what the actuator holds; the process actuator stops
	// its children.
	Close(ctx context.Context) error
}

// Request is one scale call: the count, why, and the leadership term it
// was decided under, which remote actuators pass on so that the receiver
// can refuse a write under a term older than one it has seen.
type Request struct {
	Replicas int
	Reason   string
	// Term is the region leadership term; 0 on a node without a mesh,
	// which is a region of one.
	Term uint64
	// Held says whether Term is still held. An actuator asks it before
	// every attempt after the first and gives up with ErrDeposed once it is
	// not, so a deposed leader's retry cannot land after its successor's
	// write. Nil means always.
	Held func() bool
}

func (r Request) held() bool { return r.Held == nil || r.Held() }

// ErrDeposed is the failure of a scale whose term ended before it landed.
var ErrDeposed = errors.New("leadership term no longer held")

// answerInError bounds what a failure quotes of a server's answer: the
// engine keeps a failure as its decision's rejection, the last 1000 of
// them, and a scale that fails is tried again on every evaluation.
const answerInError = 512

// quoteAnswer is msg, from a server, cut to answerInError bytes.
func quoteAnswer(msg string) string {
	if len(msg) <= answerInError {
		return msg
	}
	return strings.ToValidUTF8(msg[:answerInError], "") + fmt.Sprintf("… (%d bytes)", len(msg))
}

var (
	_ Actuator = (*Process)(nil)
	_ Actuator = (*Exec)(nil)
	_ Actuator = (*Webhook)(nil)
	_ Actuator = (*Kubernetes)(nil)
)

// Registry learns about backends the process actuator starts and stops; the
// edge node implements it.
type Registry interface {
	AddBackend(service, url string) error
	RemoveBackend(service, url string) error
}

// Kind names an actuator in a Spec.
type Kind string

// The actuators.
const (
	KindProcess    Kind = "process"
	KindExec       Kind = "exec"
	KindWebhook    Kind = "webhook"
	KindKubernetes Kind = "kubernetes"
)

// Spec is a service's `scale` block in the config.
type Spec struct {
	Actuator Kind `yaml:"actuator"`
	Min      int  `yaml:"min"`
	Max      int  `yaml:"max"`
	MaxStep  int  `yaml:"max_step"`
	// process and exec
	Command    string `yaml:"command"`
	HealthPath string `yaml:"health_path"`
	// webhook
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"`
	// kubernetes
	Namespace  string `yaml:"namespace"`
	Deployment string `yaml:"deployment"`
	Kubeconfig string `yaml:"kubeconfig"` // empty means the in-cluster service account
	// Timeout bounds one Scale call of exec, webhook and kubernetes.
	Timeout time.Duration `yaml:"timeout"`
	// Behavior stabilises what policies decide before it reaches the
	// actuator.
	Behavior Behavior `yaml:"behavior"`
}

// Validate reports every problem, each as "field: what" so that the config
// can name the line.
func (s Spec) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	need := map[Kind]struct{ field, value string }{
		KindProcess: {"command", s.Command}, KindExec: {"command", s.Command},
		KindWebhook: {"url", s.URL}, KindKubernetes: {"deployment", s.Deployment},
	}
	switch n, known := need[s.Actuator]; {
	case !known:
		bad("actuator", "unknown actuator %q (%s, %s, %s, %s)", s.Actuator, KindProcess, KindExec, KindWebhook, KindKubernetes)
	case n.value == "":
		bad(n.field, "the %s actuator needs scale.%s", s.Actuator, n.field)
	}
	if s.Min < 0 || (s.Max != 0 && s.Max < s.Min) || s.MaxStep < 0 {
		errs = append(errs, errors.New("scale needs 0 ≤ min ≤ max and max_step ≥ 0"))
	}
	if err := s.Behavior.Validate(); err != nil {
		errs = append(errs, err)
	}
	if s.Actuator == KindProcess && !strings.Contains(s.Command, "{addr}") && !strings.Contains(s.Command, "{port}") {
		bad("command", "the process command must take {addr} or {port}")
	}
	return errors.Join(errs...)
}

// New builds the actuator a Spec names.
func New(service string, s Spec, reg Registry, log *slog.Logger) (Actuator, error) {
	switch s.Actuator {
	case KindProcess:
		return NewProcess(service, ProcessSpec{Command: s.Command, Min: s.Min, Max: s.Max, HealthPath: s.HealthPath}, reg, log)
	case KindExec:
		return NewExec(service, ExecSpec{Command: s.Command, Timeout: s.Timeout}, log)
	case KindWebhook:
		return NewWebhook(service, WebhookSpec{URL: s.URL, Secret: s.Secret, Timeout: s.Timeout}, log)
	case KindKubernetes:
		return NewKubernetes(service, KubernetesSpec{Namespace: s.Namespace, Deployment: s.Deployment, Kubeconfig: s.Kubeconfig, Timeout: s.Timeout}, log)
	}
	return nil, fmt.Errorf("service %s: unknown actuator %q (want %s, %s, %s or %s)", service, s.Actuator, KindProcess, KindExec, KindWebhook, KindKubernetes)
}
