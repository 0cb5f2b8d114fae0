package policies

import (
	"errors"
	"fmt"
	"time"
)

// PolicySpec is one entry of the config's `policies` block.
type PolicySpec struct {
	Name     string        `yaml:"-"`
	Script   string        `yaml:"script"`   // path of the Lua file
	Interval time.Duration `yaml:"interval"` // default 1s, at least 50ms
	Timeout  time.Duration `yaml:"timeout"`  // evaluation deadline; default min(interval, 200ms)
	Services []string      `yaml:"services"` // what the policy sees and may act on; empty means all
	DryRun   bool          `yaml:"dry_run"`  // record decisions without acting
	// Source, when set, is the script text and Script only names it.
	Source string `yaml:"-"`
}

// ServiceBounds limit what any policy may decide for a service.
type ServiceBounds struct {
	Min, Max  int // replicas; Max 0 means no upper bound
	MaxStep   int // largest change of replicas in one decision; 0 means any
	MinWeight int // lowest backend weight a policy may set
}

// Interval limits.
const (
	DefaultInterval = time.Second
	MinInterval     = 50 * time.Millisecond
	maxTimeout      = 200 * time.Millisecond
)

// normalize fills defaults and checks the spec.
func (s PolicySpec) normalize() (PolicySpec, error) {
	if s.Name == "" {
		return s, errors.New("policy without a name")
	}
	if s.Script == "" {
		return s, fmt.Errorf("policy %s: no script", s.Name)
	}
	if s.Interval == 0 {
		s.Interval = DefaultInterval
	}
	if s.Interval < MinInterval {
		return s, fmt.Errorf("policy %s: interval %v is below the minimum %v", s.Name, s.Interval, MinInterval)
	}
	if s.Timeout == 0 {
		s.Timeout = min(s.Interval, maxTimeout)
	}
	if s.Timeout < 0 || s.Timeout > s.Interval {
		return s, fmt.Errorf("policy %s: timeout %v must be positive and at most the interval %v", s.Name, s.Timeout, s.Interval)
	}
	for _, svc := range s.Services {
		if svc == "" {
			return s, fmt.Errorf("policy %s: empty service name", s.Name)
		}
	}
	return s, nil
}

// Validate reports whether b is consistent.
func (b ServiceBounds) Validate() error {
	switch {
	case b.Min < 0 || b.MaxStep < 0 || b.MinWeight < 0:
		return fmt.Errorf("bounds must not be negative: %+v", b)
	case b.Max != 0 && b.Max < b.Min:
		return fmt.Errorf("max %d is below min %d", b.Max, b.Min)
	}
	return nil
}
