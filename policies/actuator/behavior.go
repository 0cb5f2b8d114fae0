package actuator

import (
	"errors"
	"fmt"
	"time"

	"perigee/units"
)

// Behavior is how fast a service's replica count may move, as Kubernetes'
// HPA `behavior` sets it: the policy engine stabilises every scale
// decision with it before an actuator sees it. It is the `behavior` block
// of a service's `scale`; every field left out takes its default, so it is
// on unless a config turns it off: a window of 0s stabilises nothing in its
// direction, and a large percent all but lifts a rate limit.
type Behavior struct {
	// DownWindow: scale down only to the highest recommendation of this
	// long; default 5m. UpWindow: scale up only to the lowest; default 0.
	DownWindow *units.Duration `yaml:"scale_down_window" json:"scale_down_window"`
	UpWindow   *units.Duration `yaml:"scale_up_window" json:"scale_up_window"`
	// Up and Down limit the change per period.
	Up   Rate `yaml:"scale_up" json:"scale_up"`
	Down Rate `yaml:"scale_down" json:"scale_down"`
}

// Rate permits, per Period, the larger of Pods replicas and Percent of the
// count at the period's start, like HPA's selectPolicy Max.
type Rate struct {
	Pods    int            `yaml:"pods" json:"pods"`
	Percent int            `yaml:"percent" json:"percent"`
	Period  units.Duration `yaml:"period" json:"period"`
}

// The defaults: up fast, down slow. Scaling up may multiply the count by
// five every 15 s (or add 4), which meets a flash crowd in one step and
// still stops a runaway metric; scaling down waits for five minutes of
// lower recommendations (HPA's default), then may go all the way at once.
var (
	DefaultDownWindow = 5 * time.Minute
	DefaultUp         = Rate{Pods: 4, Percent: 400, Period: units.Duration(15 * time.Second)}
	DefaultDown       = Rate{Percent: 100, Period: units.Duration(15 * time.Second)}
)

// maxBehaviorSpan bounds windows and periods, and so what a stabiliser
// remembers.
const maxBehaviorSpan = time.Hour

// WithDefaults fills what b leaves out.
func (b Behavior) WithDefaults() Behavior {
	if b.DownWindow == nil {
		d := units.Duration(DefaultDownWindow)
		b.DownWindow = &d
	}
	if b.UpWindow == nil {
		var d units.Duration
		b.UpWindow = &d
	}
	b.Up = b.Up.withDefaults(DefaultUp)
	b.Down = b.Down.withDefaults(DefaultDown)
	return b
}

func (r Rate) withDefaults(d Rate) Rate {
	if r.Pods == 0 && r.Percent == 0 {
		r.Pods, r.Percent = d.Pods, d.Percent
	}
	if r.Period == 0 {
		r.Period = d.Period
	}
	return r
}

// Validate reports every problem of b with its defaults filled, each as
// "field: what".
func (b Behavior) Validate() error {
	b = b.WithDefaults()
	var errs []error
	span := func(field, what string, d time.Duration, zeroOK bool) {
		if d < 0 || d > maxBehaviorSpan || (d == 0 && !zeroOK) {
			errs = append(errs, fmt.Errorf("%s: the %s %v must be within [0, %v] (a period above 0)", field, what, d, maxBehaviorSpan))
		}
	}
	span("behavior.scale_down_window", "scale-down window", b.DownWindow.D(), true)
	span("behavior.scale_up_window", "scale-up window", b.UpWindow.D(), true)
	for _, dir := range []struct {
		field, name string
		r           Rate
	}{{"behavior.scale_up", "scale-up", b.Up}, {"behavior.scale_down", "scale-down", b.Down}} {
		span(dir.field+".period", dir.name+" period", dir.r.Period.D(), false)
		if dir.r.Pods < 0 || dir.r.Percent < 0 {
			errs = append(errs, fmt.Errorf("%s: the %s pods and percent must not be negative", dir.field, dir.name))
		}
	}
	return errors.Join(errs...)
}
