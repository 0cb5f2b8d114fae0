// Package actuator carries out scale decisions: it runs local processes,
// runs a command, calls a webhook or sets a Kubernetes Deployment's
// replicas.
package actuator

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Actuator sets the replica count of one service.
type Actuator interface {
	// Scale sets the desired replica count and returns when it is in
	// effect or has failed.
	Scale(ctx context.Context, replicas int, reason string) error
	// Replicas is the count currently in effect.
	Replicas() int
	// Close releases what the actuator holds; the process actuator stops
	// its children.
	Close(ctx context.Context) error
}

// Registry learns about backends the process actuator starts and stops; the
// edge node implements it.
type Registry interface {
	AddBackend(service, url string) error
	RemoveBackend(service, url string) error
}

// Spec is a service's `scale` block in the config.
type Spec struct {
	Actuator string `yaml:"actuator"` // process, exec, webhook or kubernetes
	Min      int    `yaml:"min"`
	Max      int    `yaml:"max"`
	MaxStep  int    `yaml:"max_step"`
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
}

// New builds the actuator a Spec names.
func New(service string, s Spec, reg Registry, log *slog.Logger) (Actuator, error) {
	switch s.Actuator {
	case "process":
		return NewProcess(service, ProcessSpec{Command: s.Command, Min: s.Min, Max: s.Max, HealthPath: s.HealthPath}, reg, log)
	case "exec":
		return NewExec(service, ExecSpec{Command: s.Command, Timeout: s.Timeout}, log)
	case "webhook":
		return NewWebhook(service, WebhookSpec{URL: s.URL, Secret: s.Secret, Timeout: s.Timeout}, log)
	case "kubernetes":
		return NewKubernetes(service, KubernetesSpec{Namespace: s.Namespace, Deployment: s.Deployment, Kubeconfig: s.Kubeconfig, Timeout: s.Timeout}, log)
	}
	return nil, fmt.Errorf("service %s: unknown actuator %q (want process, exec, webhook or kubernetes)", service, s.Actuator)
}
