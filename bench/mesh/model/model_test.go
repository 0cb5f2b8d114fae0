package model

import (
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"perigee/mesh"
	"perigee/telemetry"
)

func testConfig(t *testing.T, nodes, regions int, p Protocol) Config {
	t.Helper()
	encode := func(id, region string, gen uint64) (mesh.WireMessages, error) {
		return mesh.SampleMessages(mesh.NodeMeta{ID: id, Region: region}, gen, telemetry.NodeSample{RPS: 1000, InFlight: 10, CPU: 0.5}, nil)
	}
	summarise := func(region, sender string, gen uint64, members []string) ([]byte, []byte, []byte) {
		return mesh.SampleSummary(region, sender, gen, members, 10)
	}
	return Config{Nodes: nodes, Regions: regions, Protocol: p, Warmup: 10 * time.Second, Duration: 40 * time.Second,
		Trials: 10, DelayIn: time.Millisecond, DelayOut: 30 * time.Millisecond, Seed: 1,
		Memberlist: memberlist.DefaultLANConfig(), Mesh: LAN(), Encode: encode, Summarise: summarise, Proposal: DefaultProposal()}
}

func TestCurrentSpreadsEveryChange(t *testing.T) {
	res, err := Run(testConfig(t, 20, 1, Current))
	if err != nil {
		t.Fatal(err)
	}
	if res.FleetMissed != 0 || len(res.FleetSeen) != 10 {
		t.Fatalf("%d changes seen by all, %d missed", len(res.FleetSeen), res.FleetMissed)
	}
	if res.UDP <= 0 {
		t.Fatalf("no gossip counted: %+v", res)
	}
}

// Direct sends within a region reach every member in one hop: after at
// most one sample interval for the change to be read, plus the delay.
func TestProposedRegionIsOneHop(t *testing.T) {
	cfg := testConfig(t, 40, 4, Proposed)
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.RegionMissed != 0 || len(res.RegionSeen) != cfg.Trials {
		t.Fatalf("%d changes seen by the region, %d missed", len(res.RegionSeen), res.RegionMissed)
	}
	if worst := slices.Max(res.RegionSeen); worst > cfg.Mesh.Sample+cfg.DelayIn {
		t.Fatalf("a change took %v to reach its region, more than a sample and a hop", worst)
	}
	if res.FleetMissed != 0 {
		t.Fatalf("%d changes never reached the fleet in a summary", res.FleetMissed)
	}
	if res.StaleRegion != 0 || res.StaleFleet != 0 || res.LeaderChanges != 0 {
		t.Fatalf("stale or flapping with nothing failing: %+v", res)
	}
}

func TestSameSeedSameResult(t *testing.T) {
	a, err := Run(testConfig(t, 12, 3, Proposed))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Run(testConfig(t, 12, 3, Proposed))
	if a.UDP != b.UDP || !slices.Equal(a.FleetSeen, b.FleetSeen) {
		t.Fatalf("two runs of one seed differ: %v vs %v", a.UDP, b.UDP)
	}
}

// A lost packet of a direct send is made up: by the second copy, a beat's
// repair or a push/pull.
func TestProposedSurvivesLoss(t *testing.T) {
	cfg := testConfig(t, 30, 3, Proposed)
	cfg.Loss = 0.05
	cfg.Duration = 60 * time.Second
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.RegionMissed != 0 || res.FleetMissed != 0 {
		t.Fatalf("changes lost for good at 5%% loss: %+v", res)
	}
}
