package telemetry

import "time"

// Decision is one scaling or traffic decision a policy made, applied or not.
// The policies append them to their log and the shipper sends them on.
type Decision struct {
	Time     time.Time `json:"time"`
	Node     string    `json:"node"`
	Region   string    `json:"region"`
	Policy   string    `json:"policy"`
	Action   string    `json:"action"` // scale, weight, eject, restore, limit, shed, circuit
	Service  string    `json:"service,omitempty"`
	Target   string    `json:"target,omitempty"` // backend or route
	Value    float64   `json:"value"`
	Reason   string    `json:"reason,omitempty"`
	Applied  bool      `json:"applied"`
	Rejected string    `json:"rejected,omitempty"` // why validation refused it
	DryRun   bool      `json:"dry_run,omitempty"`
}

// Event is something that happened to the node or its view of the fleet:
// a member joined or died, a config reloaded, a leader changed.
type Event struct {
	Time   time.Time         `json:"time"`
	Node   string            `json:"node"`
	Kind   string            `json:"kind"`
	Fields map[string]string `json:"fields,omitempty"`
}

// AccessRecord is one sampled access-log line.
type AccessRecord struct {
	Time     time.Time     `json:"time"`
	Route    string        `json:"route"`
	Service  string        `json:"service"`
	Method   string        `json:"method"`
	Path     string        `json:"path"`
	Status   int           `json:"status"`
	Proto    string        `json:"proto"`
	Duration time.Duration `json:"duration"`
	Bytes    int64         `json:"bytes"`
	Client   string        `json:"client"`
}
