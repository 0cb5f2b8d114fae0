package policies

import (
	"errors"
	"fmt"
	"time"

	"perigee/policies/actuator"
	"perigee/units"
)

// Spec is one entry of the config's `policies` block.
type Spec struct {
	Name     string         `yaml:"-" json:"-"`                       // the entry's key
	Script   string         `yaml:"script" json:"script"`             // path of the Lua file
	Interval units.Duration `yaml:"interval" json:"interval"`         // default 1s, at least 50ms
	Timeout  units.Duration `yaml:"timeout" json:"timeout,omitempty"` // evaluation deadline; default min(interval, 200ms)
	Services []string       `yaml:"services" json:"services"`         // what the policy sees and may act on; empty means all
	DryRun   bool           `yaml:"dry_run" json:"dry_run"`           // record decisions without acting
	// Source, when set, is the script text and Script only names it.
	Source string `yaml:"-" json:"-"`
}

// ServiceBounds limit what any policy may decide for a service.
type ServiceBounds struct {
	Min, Max  int // replicas; Max 0 means no upper bound
	MaxStep   int // largest change of replicas in one decision; 0 means any
	MinWeight int // lowest backend weight a policy may set
	// Behavior stabilises scale decisions; its zero value is the defaults.
	Behavior actuator.Behavior
}

// Interval limits.
const (
	DefaultInterval = time.Second
	MinInterval     = 50 * time.Millisecond
	maxTimeout      = 200 * time.Millisecond
)

// SetDefaults fills the interval and timeout the spec leaves out.
func (s *Spec) SetDefaults() {
	if s.Interval == 0 {
		s.Interval = units.Duration(DefaultInterval)
	}
	if s.Timeout == 0 {
		s.Timeout = units.Duration(min(s.Interval.D(), maxTimeout))
	}
}

// Validate reports every problem of a spec with its defaults filled, each
// as "field: what" so that the config can name the line.
func (s Spec) Validate() error {
	var errs []error
	if s.Script == "" {
		errs = append(errs, errors.New("script: a policy needs a script (a .lua file)"))
	}
	if s.Interval.D() < MinInterval {
		errs = append(errs, fmt.Errorf("interval: the interval %v is below the minimum %v", s.Interval.D(), MinInterval))
	}
	if s.Timeout <= 0 || s.Timeout > s.Interval {
		errs = append(errs, fmt.Errorf("timeout: the timeout %v must be positive and at most the interval %v", s.Timeout.D(), s.Interval.D()))
	}
	for i, svc := range s.Services {
		if svc == "" {
			errs = append(errs, fmt.Errorf("services[%d]: empty service name", i))
		}
	}
	return errors.Join(errs...)
}

// normalize fills defaults and checks the spec.
func (s Spec) normalize() (Spec, error) {
	if s.Name == "" {
		return s, errors.New("policy without a name")
	}
	s.SetDefaults()
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("policy %s: %w", s.Name, err)
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
	return b.Behavior.Validate()
}
