package policies

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// circuitThresholds are the keys a circuit action's table may hold, in the
// order the decision log writes them, with the least value each takes.
var circuitThresholds = [...]threshold{
	{"max_requests", 1, func(c *CircuitLimits) *int { return &c.MaxRequests }},
	{"max_pending", 0, func(c *CircuitLimits) *int { return &c.MaxPending }},
	{"max_retries", 0, func(c *CircuitLimits) *int { return &c.MaxRetries }},
	{"max_requests_per_backend", 0, func(c *CircuitLimits) *int { return &c.MaxRequestsPerBackend }},
}

type threshold struct {
	key   string
	least float64
	field func(*CircuitLimits) *int
}

// maxThreshold is the largest circuit threshold, the node config's too.
const maxThreshold = 1 << 20

// circuitArgs are the thresholds one circuit call named, as the script
// wrote them, until check has validated them.
type circuitArgs struct {
	set [len(circuitThresholds)]bool
	v   [len(circuitThresholds)]float64
}

// parseCircuit reads circuit(service, {key = number, ...}, reason). Like
// parseAction it fails the evaluation on a wrong type or a number that is
// not finite or beyond maxNumber; it fails too on a key it does not know,
// since a misspelt threshold would otherwise be silently left alone.
func parseCircuit(args []any) (action, error) {
	a := action{kind: Circuit}
	if len(args) < 2 {
		return a, fmt.Errorf("needs 2 arguments, got %d", len(args))
	}
	svc, ok := args[0].(string)
	if !ok || svc == "" {
		return a, fmt.Errorf("argument 1 must be a non-empty string, got %v", args[0])
	}
	if err := checkLength("argument 1", svc); err != nil {
		return a, err
	}
	a.service = svc
	table, ok := args[1].(map[string]any)
	if !ok || len(table) == 0 {
		return a, fmt.Errorf("argument 2 must be a table of thresholds by name (%s), got %v", thresholdNames(), args[1])
	}
	for _, key := range slices.Sorted(maps.Keys(table)) {
		i := slices.IndexFunc(circuitThresholds[:], func(t threshold) bool { return t.key == key })
		if i < 0 {
			return a, fmt.Errorf("unknown threshold %q (want %s)", key, thresholdNames())
		}
		v, ok := table[key].(float64)
		if !ok {
			return a, fmt.Errorf("%s must be a number, got %v", key, table[key])
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > maxNumber {
			return a, fmt.Errorf("%s must be a finite number within ±%g, got %v", key, float64(maxNumber), v)
		}
		a.circuit.set[i], a.circuit.v[i] = true, v
	}
	var err error
	if a.reason, err = parseReason(args, 2); err != nil {
		return a, err
	}
	a.target = a.circuit.String()
	if a.circuit.set[0] {
		a.value = a.circuit.v[0]
	}
	return a, nil
}

func thresholdNames() string {
	names := make([]string, len(circuitThresholds))
	for i, t := range circuitThresholds {
		names[i] = t.key
	}
	return strings.Join(names, ", ")
}

// String is what the decision log shows as the target: the thresholds
// the call named, "max_requests=8 max_pending=0".
func (c circuitArgs) String() string {
	var parts []string
	for i, t := range circuitThresholds {
		if c.set[i] {
			parts = append(parts, t.key+"="+strconv.FormatFloat(c.v[i], 'g', -1, 64))
		}
	}
	return strings.Join(parts, " ")
}

// check says why a threshold is out of its range, or "".
func (c circuitArgs) check() string {
	for i, t := range circuitThresholds {
		if v := c.v[i]; c.set[i] && (!whole(v) || v < t.least || v > maxThreshold) {
			return fmt.Sprintf("circuit %s must be a whole number in [%g, %d], got %v", t.key, t.least, maxThreshold, v)
		}
	}
	return ""
}

// limits are the checked thresholds, Keep for those the call left out.
func (c circuitArgs) limits() CircuitLimits {
	l := KeepAll
	for i, t := range circuitThresholds {
		if c.set[i] {
			*t.field(&l) = int(c.v[i])
		}
	}
	return l
}
