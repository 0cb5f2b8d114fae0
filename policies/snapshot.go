// Package policies runs scaling policies written in Lua: every interval a
// policy sees a snapshot of what the gateway measures, its decisions are
// checked against the service's bounds, applied (node-local actions on every
// node, scale only on the region leader) and recorded.
package policies

import (
	"time"

	"perigee/runtime/lua"
	"perigee/telemetry"
)

// Snapshot is what a policy sees in one evaluation.
type Snapshot struct {
	Time     time.Time
	Node     NodeFigures
	Services map[string]ServiceFigures // this node's view
	Region   map[string]ServiceFigures // summed over the region; nil means this node alone
}

// NodeFigures describe the node itself.
type NodeFigures struct {
	CPU      float64 // cores busy
	MemBytes uint64
	InFlight int64
}

// ServiceFigures describe one service over the last sampling window.
type ServiceFigures struct {
	RPS       float64
	ErrorRate float64 // share of responses that failed
	P50       time.Duration
	P95       time.Duration
	P99       time.Duration
	EWMA      time.Duration
	InFlight  int64
	Queued    int64
	Replicas  Replicas
	Backends  []BackendFigures
}

// Replicas is a service's replica count as its actuator reports it. The
// engine fills it in from the actuator and bounds when the source leaves it
// zero.
type Replicas struct {
	Current, Desired, Min, Max int
}

// BackendFigures describe one backend of a service.
type BackendFigures struct {
	Address   string
	Healthy   bool
	Weight    int
	InFlight  int64
	Latency   time.Duration // EWMA of its response time
	ErrorRate float64
}

// Source and Target are the whole boundary between the engine and the node
// it runs on: the node implements both.

// Source is what the engine reads from the node.
type Source interface {
	// Snapshot is the node's figures now, and its region's from gossip;
	// the engine adds the replica counts its actuators report.
	Snapshot() Snapshot
	// Leadership says whether this node may pass scale decisions to
	// actuators now: it leads its region under a term it still holds and
	// sees a majority of the region. The term is never reused; the engine
	// asks again right before each actuator call and drops the call if the
	// term has changed. A node without a mesh leads under term 0.
	Leadership() (term uint64, ok bool)
}

// Target is what the engine drives on the node.
type Target interface {
	SetWeight(service, backend string, w int) error
	Eject(service, backend string, d time.Duration) error
	Restore(service, backend string) error
	// SetLimit installs a token bucket on the route; rps 0 removes it.
	SetLimit(route string, rps float64, burst int) error
	// SetShed rejects that share of the route's requests with
	// 503 and Retry-After; 0 stops shedding.
	SetShed(route string, fraction float64) error
	// RouteService names the service a route sends to, so that a policy
	// assigned some services acts on their routes alone.
	RouteService(route string) (service string, ok bool)
	// SetCircuit changes the service's circuit breaker thresholds that c
	// names; the others stay as they are.
	SetCircuit(service string, c CircuitLimits) error
	// Decided hears every decision as the engine logs it, for shipping.
	Decided(telemetry.Decision)
}

// CircuitLimits is what a circuit action sets: Envoy's thresholds, each Keep
// unless the script named it.
type CircuitLimits struct {
	MaxRequests, MaxPending, MaxRetries, MaxRequestsPerBackend int
}

// Keep marks a threshold a circuit action leaves as it is.
const Keep = -1

// KeepAll names no threshold.
var KeepAll = CircuitLimits{Keep, Keep, Keep, Keep}

// On is base with the thresholds c names.
func (c CircuitLimits) On(base CircuitLimits) CircuitLimits {
	for _, f := range [...]struct{ to, from *int }{
		{&base.MaxRequests, &c.MaxRequests}, {&base.MaxPending, &c.MaxPending},
		{&base.MaxRetries, &c.MaxRetries}, {&base.MaxRequestsPerBackend, &c.MaxRequestsPerBackend},
	} {
		if *f.from != Keep {
			*f.to = *f.from
		}
	}
	return base
}

// FiguresFrom turns a telemetry sample into service figures, reading the
// percentiles from its mergeable histogram; ewma is the service's decaying
// average latency, which the sample does not carry.
func FiguresFrom(s telemetry.ServiceSample, ewma time.Duration) ServiceFigures {
	return ServiceFigures{
		RPS:       s.RPS,
		ErrorRate: s.ErrorRate,
		P50:       s.Latency.Quantile(0.50),
		P95:       s.Latency.Quantile(0.95),
		P99:       s.Latency.Quantile(0.99),
		EWMA:      ewma,
		InFlight:  s.InFlight,
		Queued:    s.Queued,
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// luaView is the table m of one policy, kept between evaluations: each
// evaluation writes the new figures into the tables of the last one, which
// spares building some seven tables per service (most of an evaluation's
// cost with 100 services). Tables are replaced only when their shape
// changes: a service appears or goes, or its backends change in number.
// The links between the tables are set again on every evaluation, so a
// script that overwrote one in m does not spoil the next evaluation.
type luaView struct {
	vm                      *lua.VM
	allow                   map[string]bool
	spec                    Spec
	nodeName, regionName    string
	m, node                 lua.Table
	services, region        lua.Table
	svcTables, regionTables map[string]*serviceTables
	localRegion             bool // region is the services table itself
}

// serviceTables are the tables of one service in m.
type serviceTables struct {
	t, replicas, backends lua.Table
	backend               []lua.Table
	seen                  bool
}

func newLuaView(vm *lua.VM, spec Spec, allow map[string]bool, node, region string) *luaView {
	v := &luaView{vm: vm, allow: allow, spec: spec, nodeName: node, regionName: region,
		m: vm.NewTable(0, 6), node: vm.NewTable(0, 5), services: vm.NewTable(0, 0),
		svcTables: map[string]*serviceTables{}, localRegion: true}
	v.region = v.services
	return v
}

// update writes snap into the tables and returns m.
func (v *luaView) update(snap Snapshot, localRegion bool) lua.Table {
	v.m.SetNumber("time", float64(snap.Time.UnixNano())/1e9)
	v.m.SetString("policy", v.spec.Name)
	v.m.SetNumber("interval", v.spec.Interval.D().Seconds())
	v.m.SetTable("node", v.node)
	v.m.SetTable("services", v.services)
	v.node.SetString("name", v.nodeName)
	v.node.SetString("region", v.regionName)
	v.node.SetNumber("cpu", snap.Node.CPU)
	v.node.SetNumber("mem_bytes", float64(snap.Node.MemBytes))
	v.node.SetNumber("in_flight", float64(snap.Node.InFlight))
	v.fill(v.services, v.svcTables, snap.Services)
	if localRegion != v.localRegion {
		v.localRegion = localRegion
		v.region, v.regionTables = v.services, nil
		if !localRegion {
			v.region, v.regionTables = v.vm.NewTable(0, 0), map[string]*serviceTables{}
		}
	}
	v.m.SetTable("region", v.region)
	if !localRegion {
		v.fill(v.region, v.regionTables, snap.Region)
	}
	return v.m
}

// fill writes figures into t, one field per service in allow (or every
// service when allow is empty), and removes services that are gone.
func (v *luaView) fill(t lua.Table, tables map[string]*serviceTables, in map[string]ServiceFigures) {
	for name, f := range in {
		if len(v.allow) > 0 && !v.allow[name] {
			continue
		}
		st := tables[name]
		if st == nil {
			st = &serviceTables{t: v.vm.NewTable(0, 10), replicas: v.vm.NewTable(0, 4)}
			tables[name] = st
		}
		t.SetTable(name, st.t)
		st.seen = true
		v.fillService(st, f)
	}
	for name, st := range tables {
		if !st.seen {
			delete(tables, name)
			t.SetTable(name, lua.Table{})
		}
		st.seen = false
	}
}

func (v *luaView) fillService(st *serviceTables, f ServiceFigures) {
	t := st.t
	t.SetNumber("rps", f.RPS)
	t.SetNumber("error_rate", f.ErrorRate)
	t.SetNumber("p50_ms", ms(f.P50))
	t.SetNumber("p95_ms", ms(f.P95))
	t.SetNumber("p99_ms", ms(f.P99))
	t.SetNumber("ewma_ms", ms(f.EWMA))
	t.SetNumber("in_flight", float64(f.InFlight))
	t.SetNumber("queued", float64(f.Queued))
	t.SetTable("replicas", st.replicas)
	r := st.replicas
	r.SetNumber("current", float64(f.Replicas.Current))
	r.SetNumber("desired", float64(f.Replicas.Desired))
	r.SetNumber("min", float64(f.Replicas.Min))
	r.SetNumber("max", float64(f.Replicas.Max))
	if len(st.backend) != len(f.Backends) || st.backends == (lua.Table{}) {
		st.backends = v.vm.NewTable(len(f.Backends), 0)
		st.backend = st.backend[:0]
		for range f.Backends {
			bt := v.vm.NewTable(0, 6)
			st.backends.Append(bt)
			st.backend = append(st.backend, bt)
		}
	}
	t.SetTable("backends", st.backends)
	for i, b := range f.Backends {
		bt := st.backend[i]
		bt.SetString("address", b.Address)
		bt.SetBool("healthy", b.Healthy)
		bt.SetNumber("weight", float64(b.Weight))
		bt.SetNumber("in_flight", float64(b.InFlight))
		bt.SetNumber("latency_ms", ms(b.Latency))
		bt.SetNumber("error_rate", b.ErrorRate)
	}
}
